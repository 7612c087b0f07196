/**
 * A ploop disk made of a stack of deltas (a raw or ploop base, ploop deltas
 * above it). Opening a stack opens its top delta with the deltas below it
 * recorded as its backing reference; the block layer then opens each delta below
 * through `PloopDriver.openBacking`, so the stack is an ordinary chain of block
 * nodes (one per delta, read-only below the top) like a qcow2 backing chain.
 */
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { VdiskError } from '../../errors.js';
import { NodeHostFile } from '../../host/node-file.js';
import type { DriverOpenOptions } from '../registry-types.js';
import { MAX_DESCRIPTOR_BYTES, parseDescriptor, type DeltaRef } from './descriptor.js';
import { PloopDriver } from './driver.js';

/**
 * Opens the deltas `files` (bottom first, top last) as one disk; returns the top
 * delta's driver, whose backing reference names the delta below it.
 *
 * @example
 *   const top = await openPloopStack(['base.hds', 'delta1.hds'], { readOnly: false });
 *   // the block layer (openImage) opens the deltas below through top.openBacking
 */
export async function openPloopStack(files: readonly DeltaRef[] | readonly string[], options: DriverOpenOptions): Promise<PloopDriver> {
  const refs: DeltaRef[] = files.map((f) => (typeof f === 'string' ? { guid: f, file: f, type: 'Compressed' as const } : f));
  const top = refs[refs.length - 1];
  if (!top || top.type !== 'Compressed') {
    throw new VdiskError('EINVAL', 'A ploop stack needs a ploop delta on top', { field: 'File' });
  }
  return PloopDriver.open(resolve(top.file), options, refs.slice(0, -1).map((r) => ({ ...r, file: resolve(r.file) })));
}

/** Reads a DiskDescriptor.xml (bounded in size). */
export async function readDescriptorText(path: string): Promise<string> {
  const host = await NodeHostFile.open(path, { readOnly: true });
  try {
    const size = await host.size();
    if (size > MAX_DESCRIPTOR_BYTES) {
      throw new VdiskError('EFBIG', `Cannot open '${path}': descriptor of ${size} bytes is too large`, { file: path });
    }
    const bytes = new Uint8Array(size);
    await host.read(bytes, 0);
    return Buffer.from(bytes).toString('utf8');
  } finally {
    await host.close();
  }
}

/** The deltas a DiskDescriptor.xml names, bottom first, with paths resolved against its directory. */
export async function descriptorChain(path: string): Promise<DeltaRef[]> {
  const xml = await readDescriptorText(path);
  const dir = dirname(resolve(path));
  return parseDescriptor(xml, path).map((d) => ({ ...d, file: isAbsolute(d.file) ? d.file : join(dir, d.file) }));
}

/** Opens the disk a DiskDescriptor.xml describes (its top delta; see openPloopStack). */
export async function openDescriptor(path: string, options: DriverOpenOptions): Promise<PloopDriver> {
  return openPloopStack(await descriptorChain(path), options);
}
