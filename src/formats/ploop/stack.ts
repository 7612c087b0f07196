/**
 * A ploop disk made of a stack of deltas: the top one is opened as asked
 * (usually writable), every one below read-only, and each delta's unallocated
 * clusters read from the deltas below it through `BackingSource`. Writes go to
 * the top with COW from below (see driver.ts).
 */
import { dirname, isAbsolute, join } from 'node:path';
import { VdiskError } from '../../errors.js';
import type { HostFile } from '../../host/host-file.js';
import { NodeHostFile } from '../../host/node-file.js';
import type { BackingSource } from '../driver.js';
import type { DriverOpenOptions } from '../registry-types.js';
import { MAX_DESCRIPTOR_BYTES, parseDescriptor, type DeltaRef } from './descriptor.js';
import { PloopDriver } from './driver.js';

interface Layer extends BackingSource {
  close(): Promise<void>;
}

/** A raw base image (descriptor type `Plain`): identity mapping, read-only. */
class RawBase implements Layer {
  readonly length: number;
  readonly #host: HostFile;
  private constructor(host: HostFile, length: number) {
    this.#host = host;
    this.length = length;
  }
  static async open(path: string): Promise<RawBase> {
    const host = await NodeHostFile.open(path, { readOnly: true });
    return new RawBase(host, await host.size());
  }
  read(offset: number, buf: Uint8Array): Promise<void> {
    return this.#host.read(buf, offset);
  }
  close(): Promise<void> {
    return this.#host.close();
  }
}

/**
 * Opens the deltas `files` (bottom first, top last) as one disk; returns the top
 * driver, which closes the lower deltas when it is closed.
 *
 * @example
 *   const disk = await openPloopStack(['base.hds', 'delta1.hds'], { readOnly: false });
 */
export async function openPloopStack(files: readonly DeltaRef[] | readonly string[], options: DriverOpenOptions): Promise<PloopDriver> {
  const refs: DeltaRef[] = files.map((f) => (typeof f === 'string' ? { guid: f, file: f, type: 'Compressed' as const } : f));
  const opened: Layer[] = [];
  try {
    let below: PloopDriver | RawBase | null = null;
    for (let level = 0; level < refs.length; level++) {
      const ref = refs[level] as DeltaRef;
      const top = level === refs.length - 1;
      const layer: PloopDriver | RawBase =
        ref.type === 'Plain' ? await RawBase.open(ref.file) : await PloopDriver.open(ref.file, top ? options : { ...options, readOnly: true });
      opened.push(layer);
      if (layer instanceof PloopDriver) {
        if (below instanceof PloopDriver && below.clusterSize !== layer.clusterSize) {
          throw new VdiskError(
            'ECORRUPT',
            `Cannot open delta '${ref.file}': cluster size ${layer.clusterSize} differs from ${below.clusterSize} of the delta below`,
            { file: ref.file, field: 'tracks' },
          );
        }
        if (below && below.length > layer.length) {
          throw new VdiskError('ECORRUPT', `Cannot open delta '${ref.file}': it is smaller (${layer.length}) than the delta below (${below.length})`, {
            file: ref.file,
            field: 'nb_sectors',
          });
        }
        layer.setBacking(below);
      }
      below = layer;
    }
    const top = opened[opened.length - 1];
    if (!(top instanceof PloopDriver)) {
      throw new VdiskError('EINVAL', 'A ploop stack needs a ploop delta on top', { field: 'File' });
    }
    top.ownBelow(opened.slice(0, -1));
    return top;
  } catch (e) {
    for (const l of opened.reverse()) await l.close().catch(() => undefined);
    throw e;
  }
}

/** Opens the disk a DiskDescriptor.xml describes. */
export async function openDescriptor(path: string, options: DriverOpenOptions): Promise<PloopDriver> {
  const host = await NodeHostFile.open(path, { readOnly: true });
  let xml: string;
  try {
    const size = await host.size();
    if (size > MAX_DESCRIPTOR_BYTES) {
      throw new VdiskError('EFBIG', `Cannot open '${path}': descriptor of ${size} bytes is too large`, { file: path });
    }
    const bytes = new Uint8Array(size);
    await host.read(bytes, 0);
    xml = Buffer.from(bytes).toString('utf8');
  } finally {
    await host.close();
  }
  const dir = dirname(path);
  const chain = parseDescriptor(xml, path).map((d) => ({ ...d, file: isAbsolute(d.file) ? d.file : join(dir, d.file) }));
  return openPloopStack(chain, options);
}
