import { VdiskError } from '../../../../src/errors.js';
import type { ChainExtent, ImageNode, LayerExtent, WriteFlags, ZeroFlags } from '../../../../src/block/types.js';

const BLOCK = 4096;

/**
 * An in-memory ImageNode for server tests: bytes plus a per-4 KiB allocation
 * map, so block status has holes and data. Counts calls for assertions.
 */
export class MemoryNode implements ImageNode {
  readonly filename = 'memory';
  readonly format = 'raw' as const;
  readonly readOnly: boolean;
  readonly length: number;
  readonly backing = null;
  readonly requestAlignment = 1;
  readonly clusterSize = undefined;
  readonly bytes: Uint8Array;
  readonly allocated: boolean[];
  flushes = 0;
  fuaWrites = 0;
  discards = 0;
  /** Makes every I/O wait this long, to exercise concurrency. */
  delayMs = 0;
  /** When set, reads and writes touching this offset fail with EIO. */
  failAt: number | null = null;

  constructor(length: number, options: { readOnly?: boolean } = {}) {
    this.length = length;
    this.readOnly = options.readOnly === true;
    this.bytes = new Uint8Array(length);
    this.allocated = new Array<boolean>(Math.ceil(length / BLOCK)).fill(false);
  }

  async #delay(): Promise<void> {
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs));
  }

  #check(offset: number, length: number): void {
    if (offset < 0 || offset + length > this.length) throw new VdiskError('ERANGE', `request ${offset}+${length} out of range`);
    if (this.failAt !== null && this.failAt >= offset && this.failAt < offset + Math.max(length, 1)) {
      throw new VdiskError('EIO', `injected failure at ${this.failAt}`, { offset: this.failAt });
    }
  }

  #mark(offset: number, length: number, value: boolean): void {
    for (let b = Math.floor(offset / BLOCK); b * BLOCK < offset + length; b++) this.allocated[b] = value;
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.#check(offset, buf.byteLength);
    await this.#delay();
    buf.set(this.bytes.subarray(offset, offset + buf.byteLength));
  }

  async write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    if (this.readOnly) throw new VdiskError('EPERM', 'read-only');
    this.#check(offset, data.byteLength);
    await this.#delay();
    this.bytes.set(data, offset);
    this.#mark(offset, data.byteLength, true);
    if (flags?.fua) this.fuaWrites++;
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    this.#check(offset, length);
    if (flags?.fastZero && !flags.mayUnmap) throw new VdiskError('ENOTSUP', 'fast zero needs unmap here');
    await this.#delay();
    this.bytes.fill(0, offset, offset + length);
    // Only whole blocks can be deallocated; partial ones stay allocated.
    const first = Math.ceil(offset / BLOCK);
    const end = Math.floor((offset + length) / BLOCK);
    if (flags?.mayUnmap) for (let b = first; b < end; b++) this.allocated[b] = false;
    else this.#mark(offset, length, true);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.discards++;
    await this.writeZeroes(offset, length, { mayUnmap: true });
  }

  async writeCompressed(): Promise<void> {
    throw new VdiskError('ENOTSUP', 'no compression');
  }

  async flush(): Promise<void> {
    this.flushes++;
  }

  async layerStatus(offset: number, length: number): Promise<LayerExtent[]> {
    return (await this.blockStatus(offset, length)).map((e) => ({ length: e.length, allocated: e.present, zero: e.zero, data: e.data }));
  }

  async blockStatus(offset: number, length: number): Promise<ChainExtent[]> {
    this.#check(offset, length);
    const out: ChainExtent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      const b = Math.floor(pos / BLOCK);
      const next = Math.min((b + 1) * BLOCK, end);
      const alloc = this.allocated[b] === true;
      const last = out[out.length - 1];
      if (last && last.present === alloc) out[out.length - 1] = { ...last, length: last.length + (next - pos) };
      else out.push({ offset: pos, length: next - pos, present: alloc, data: alloc, zero: !alloc, depth: alloc ? 0 : 1 });
      pos = next;
    }
    return out;
  }

  async seekData(offset: number): Promise<number> {
    return offset;
  }

  async seekHole(): Promise<number> {
    return this.length;
  }

  async info(): Promise<never> {
    throw new VdiskError('ENOTSUP', 'no info');
  }

  async check(): Promise<never> {
    throw new VdiskError('ENOTSUP', 'no check');
  }

  async resize(): Promise<void> {
    throw new VdiskError('ENOTSUP', 'no resize');
  }

  chain(): ImageNode[] {
    return [this];
  }

  async close(): Promise<void> {}
}
