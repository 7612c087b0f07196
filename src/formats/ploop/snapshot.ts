/**
 * Offline snapshot of a ploop stack, as `ploop snapshot DiskDescriptor.xml` does
 * it: a new empty delta (same size and cluster size as the current top) is
 * created next to the descriptor and becomes the top; the old top, now
 * read-only, is recorded under a new snapshot GUID. The new file is complete
 * and synced before the descriptor that names it replaces the old one; if that
 * fails, the new file is removed.
 */
import { basename, dirname, join, resolve } from 'node:path';
import { VdiskError } from '../../errors.js';
import { createPloop } from './create.js';
import { addSnapshot, newGuid, readDescriptorModel, writeDescriptor } from './descriptor-edit.js';
import { PloopDriver } from './driver.js';
import { SECTOR } from './header.js';
import { descriptorChain, readDescriptorText } from './stack.js';
import { unlinkPath } from '../../host/fs-calls.js';

export interface SnapshotResult {
  /** GUID under which the old top is kept. */
  readonly snapshotGuid: string;
  /** The new top delta's path. */
  readonly file: string;
}

/**
 * @example
 *   const { file } = await snapshotStack('vm/DiskDescriptor.xml'); // vm/root.hds.{...}
 */
export async function snapshotStack(descriptorPath: string): Promise<SnapshotResult> {
  const model = readDescriptorModel(await readDescriptorText(descriptorPath), descriptorPath);
  const chain = await descriptorChain(descriptorPath);
  const top = chain[chain.length - 1];
  const bottom = chain[0];
  if (!top || !bottom) throw new VdiskError('EINVAL', `'${descriptorPath}' names no images`, { file: descriptorPath });
  let size = model.sizeSectors * SECTOR;
  let clusterSize = model.blockSectors * SECTOR;
  if (top.type === 'Compressed') {
    const d = await PloopDriver.open(top.file, { readOnly: true });
    size = Math.max(size, d.length);
    clusterSize = d.clusterSize;
    await d.close();
  }
  const dir = dirname(resolve(descriptorPath));
  // The ploop tools name a delta after the base image and a GUID; a fresh random one avoids clashes.
  const tag = newGuid();
  const name = `${basename(bottom.file)}.${tag}`;
  const file = join(dir, name);
  await createPloop(file, { size, options: { cluster_size: String(clusterSize) } });
  try {
    const snapshotGuid = addSnapshot(model, name);
    await writeDescriptor(descriptorPath, model);
    return { snapshotGuid, file };
  } catch (e) {
    await unlinkPath(file).catch(() => undefined);
    throw e;
  }
}
