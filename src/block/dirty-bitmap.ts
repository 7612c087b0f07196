/**
 * A dirty bitmap: which granules of a disk were written since a job attached
 * it. One bit per granule, in a Uint32Array (a 1 TiB disk at 64 KiB
 * granularity is 2 MiB of bits). A job clears a granule before it copies it,
 * so a write that lands during the copy sets it again and is copied later.
 */
import { createHash } from 'node:crypto';
import { VdiskError } from '../errors.js';

/** Smallest and largest granularity QEMU's mirror accepts (512 B .. 64 MiB). */
export const MIN_GRANULARITY = 512;
export const MAX_GRANULARITY = 64 * 1024 * 1024;

/** Bitmaps larger than this many granules are refused (bounds memory: 2^31 bits = 256 MiB). */
const MAX_GRANULES = 2 ** 31;

export interface DirtyRange {
  readonly offset: number;
  readonly length: number;
}

/** The bits of a DirtyBitmap at one moment (see saveBits). */
export interface SavedBits {
  readonly words: Uint32Array;
  readonly count: number;
}

export class DirtyBitmap {
  readonly granularity: number;
  readonly #length: number;
  readonly #words: Uint32Array;
  #count = 0;

  /** A bitmap over a disk of `length` bytes; `granularity` is a power of two in [512, 64 MiB]. */
  constructor(length: number, granularity: number) {
    if (!Number.isSafeInteger(granularity) || granularity < MIN_GRANULARITY || granularity > MAX_GRANULARITY || (granularity & (granularity - 1)) !== 0) {
      throw new VdiskError('EINVAL', `Invalid dirty bitmap granularity ${granularity}: it must be a power of 2 between 512 and 64M`, { field: 'granularity' });
    }
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new VdiskError('EINVAL', `Invalid dirty bitmap length ${length}`, { field: 'length' });
    }
    const granules = Math.ceil(length / granularity);
    if (granules > MAX_GRANULES) {
      throw new VdiskError('EINVAL', `Dirty bitmap of ${granules} granules is too large; use a larger granularity`, { field: 'granularity' });
    }
    this.granularity = granularity;
    this.#length = length;
    this.#words = new Uint32Array(Math.ceil(granules / 32));
  }

  /** Disk length covered, in bytes. */
  get length(): number {
    return this.#length;
  }

  /** Number of dirty bytes (dirty granules × granularity, the last one clipped to the disk). */
  get dirtyBytes(): number {
    let bytes = this.#count * this.granularity;
    const lastGranule = Math.ceil(this.#length / this.granularity) - 1;
    if (lastGranule >= 0 && this.#get(lastGranule)) bytes -= lastGranule * this.granularity + this.granularity - this.#length;
    return bytes;
  }

  /** Number of dirty granules. */
  get count(): number {
    return this.#count;
  }

  /** Marks every granule touching [offset, offset+length) dirty. */
  set(offset: number, length: number): void {
    this.#apply(offset, length, true);
  }

  /** Marks every granule touching [offset, offset+length) clean. */
  clear(offset: number, length: number): void {
    this.#apply(offset, length, false);
  }

  isDirty(offset: number, length: number): boolean {
    const [first, end] = this.#granules(offset, length);
    for (let g = first; g < end; g++) if (this.#get(g)) return true;
    return false;
  }

  /**
   * The first dirty range at or after `offset`, at most `maxLength` bytes (at
   * least one granule), or null when nothing there is dirty. Skips clean words
   * 32 granules at a time.
   */
  nextDirty(offset: number, maxLength: number): DirtyRange | null {
    const granules = Math.ceil(this.#length / this.granularity);
    let g = Math.floor(Math.max(0, offset) / this.granularity);
    while (g < granules) {
      const word = this.#words[g >>> 5] ?? 0;
      if (word === 0) {
        g = ((g >>> 5) + 1) << 5;
        continue;
      }
      if (this.#get(g)) break;
      g++;
    }
    if (g >= granules) return null;
    const maxGranules = Math.max(1, Math.floor(maxLength / this.granularity));
    let end = g + 1;
    while (end < granules && end - g < maxGranules && this.#get(end)) end++;
    const start = g * this.granularity;
    return { offset: start, length: Math.min(end * this.granularity, this.#length) - start };
  }

  /**
   * SHA-256 of the bits as QEMU's x-debug-block-dirty-bitmap-sha256 hashes
   * them: one bit per granule, least significant first, in 64-bit words
   * (at least one) in little-endian order. The 32-bit words here have the
   * same bytes on a little-endian host; the last one is padded to 64 bits.
   */
  sha256(): string {
    const longs = Math.max(1, Math.ceil(this.#words.length / 2));
    const bytes = new Uint8Array(longs * 8);
    const view = new DataView(bytes.buffer);
    this.#words.forEach((w, i) => view.setUint32(i * 4, w, true));
    return createHash('sha256').update(bytes).digest('hex');
  }

  /**
   * Sets every byte range dirty in `other` (of the same length; its
   * granularity may differ: a dirty granule of it dirties every granule here
   * that it touches).
   */
  merge(other: DirtyBitmap): void {
    if (other === this) return;
    for (let r = other.nextDirty(0, other.length); r !== null; r = other.nextDirty(r.offset + r.length, other.length)) this.set(r.offset, r.length);
  }

  /** A copy of the bits, for `restoreBits` (a QMP transaction that fails puts them back). */
  saveBits(): SavedBits {
    return { words: this.#words.slice(), count: this.#count };
  }

  /** Puts back bits `saveBits` took from this bitmap. */
  restoreBits(saved: SavedBits): void {
    this.#words.set(saved.words);
    this.#count = saved.count;
  }

  #granules(offset: number, length: number): [number, number] {
    const end = Math.min(offset + length, this.#length);
    if (length <= 0 || offset >= end) return [0, 0];
    return [Math.floor(offset / this.granularity), Math.ceil(end / this.granularity)];
  }

  #get(g: number): boolean {
    return (((this.#words[g >>> 5] ?? 0) >>> (g & 31)) & 1) === 1;
  }

  #apply(offset: number, length: number, dirty: boolean): void {
    const [first, end] = this.#granules(offset, length);
    for (let g = first; g < end; g++) {
      const w = g >>> 5;
      const bit = 1 << (g & 31);
      const word = this.#words[w] ?? 0;
      const was = (word & bit) !== 0;
      if (was === dirty) continue;
      this.#words[w] = dirty ? word | bit : word & ~bit;
      this.#count += dirty ? 1 : -1;
    }
  }
}
