/**
 * File-system blocks an O_DIRECT file has been given only part of, held in
 * memory until the rest arrives (see DirectHostFile).
 *
 * Why: ext4 runs an O_DIRECT write that is not aligned to its block size
 * (4 KiB) alone: it takes the inode exclusively and waits for every other
 * direct request on the file first. A guest writing sequentially with requests
 * that start 512 bytes into a block (the seed's case) therefore had every
 * request wait for all the others. Holding each request's partial blocks until
 * the neighbouring request fills them lets every write reach the disk block
 * aligned. This is the device's volatile write cache that cache=none already
 * promises the guest (QEMU reports write-cache on): completed data is visible to
 * reads at once and durable after the next flush.
 *
 * This class only keeps the books (which sectors of which block are held, and
 * what a read must lay over what the disk returns); DirectHostFile does the I/O.
 */

/** One block's held sectors. `mask` bit i: sector i of the block is held in `data`. */
export interface PartialBlock {
  readonly start: number;
  /** When it was opened (`PartialBlocks.stamp`): a disk write issued later is not older than it. */
  readonly born: number;
  /** The whole block; only the sectors in `mask` are meaningful. Aligned memory for O_DIRECT. */
  readonly data: Uint8Array;
  mask: number;
}

export class PartialBlocks {
  readonly blockSize: number;
  readonly sectorSize: number;
  readonly fullMask: number;
  /** Blocks that still take merges, oldest first (a Map keeps insertion order). */
  readonly #open = new Map<number, PartialBlock>();
  /** Blocks on their way to the disk: reads still lay them over the disk's bytes. */
  readonly #retired = new Set<PartialBlock>();
  /** Retired blocks already on the disk, with when they landed. */
  readonly #landed = new Map<PartialBlock, number>();
  #clock = 0;

  /** `blockSize / sectorSize` must be at most 32 (the mask is a 32-bit number). */
  constructor(blockSize: number, sectorSize: number) {
    const sectors = blockSize / sectorSize;
    if (!Number.isInteger(sectors) || sectors < 2 || sectors > 32) {
      throw new RangeError(`partial blocks: ${blockSize}-byte blocks of ${sectorSize}-byte sectors are not supported`);
    }
    this.blockSize = blockSize;
    this.sectorSize = sectorSize;
    this.fullMask = sectors === 32 ? 0xffffffff : 2 ** sectors - 1;
  }

  /** A moment in the order of block openings and disk writes. */
  stamp(): number {
    return ++this.#clock;
  }

  get openCount(): number {
    return this.#open.size;
  }

  get(start: number): PartialBlock | undefined {
    return this.#open.get(start);
  }

  add(block: PartialBlock): void {
    this.#open.set(block.start, block);
  }

  /** Marks sectors [from, to) of `block` (file offsets, sector aligned) as held. */
  hold(block: PartialBlock, from: number, to: number): void {
    block.mask = (block.mask | this.#bits(block, from, to)) >>> 0;
  }

  isFull(block: PartialBlock): boolean {
    return block.mask === this.fullMask;
  }

  /** Takes `block` out of the merge map; reads keep seeing it until `release`. */
  retire(block: PartialBlock): void {
    if (this.#open.get(block.start) === block) this.#open.delete(block.start);
    this.#retired.add(block);
  }

  /**
   * The block's write-out reached the disk at `at` (a `stamp`). It stays laid
   * over reads until `purge` says no read that began before then is still
   * running: such a read may have fetched the disk's bytes before they landed.
   */
  landed(block: PartialBlock, at: number): void {
    this.#landed.set(block, at);
  }

  /** Drops the landed blocks no read in flight can still need (`oldestRead`: the stamp of the oldest, or null); returns them. */
  purge(oldestRead: number | null): PartialBlock[] {
    const gone: PartialBlock[] = [];
    for (const [b, at] of this.#landed) {
      if (oldestRead !== null && at > oldestRead) continue;
      this.#landed.delete(b);
      this.#retired.delete(b);
      gone.push(b);
    }
    return gone;
  }

  oldest(): PartialBlock | undefined {
    return this.#open.values().next().value;
  }

  /** The blocks still taking merges, in the order they were opened. */
  openBlocks(): PartialBlock[] {
    return [...this.#open.values()];
  }

  /** Lays the held sectors that fall in [start, start + view.length) over `view`: older (retired) blocks first. */
  overlay(view: Uint8Array, start: number): void {
    if (this.#open.size === 0 && this.#retired.size === 0) return;
    const end = start + view.length;
    for (const b of this.#retired) this.#overlayOne(b, view, start, end);
    for (const b of this.#open.values()) this.#overlayOne(b, view, start, end);
  }

  /**
   * A write of [start, end) (sector aligned) issued at `issued` (a `stamp`)
   * reached the disk: the sectors it covered are newer there than what blocks
   * opened before it hold for them (blocks opened since hold newer data and
   * keep it). Returns the open blocks left with nothing held (removed; the
   * caller reuses their memory).
   */
  written(start: number, end: number, issued: number): PartialBlock[] {
    let emptied: PartialBlock[] | null = null;
    for (const b of this.#retired) {
      if (b.born < issued && b.start < end && b.start + this.blockSize > start) b.mask = (b.mask & ~this.#bits(b, start, end)) >>> 0;
    }
    for (const b of this.#open.values()) {
      if (b.born >= issued || b.start >= end || b.start + this.blockSize <= start) continue;
      b.mask = (b.mask & ~this.#bits(b, start, end)) >>> 0;
      if (b.mask === 0) (emptied ??= []).push(b);
    }
    if (emptied === null) return [];
    for (const b of emptied) this.#open.delete(b.start);
    return emptied;
  }

  #overlayOne(b: PartialBlock, view: Uint8Array, start: number, end: number): void {
    if (b.mask === 0 || b.start >= end || b.start + this.blockSize <= start) return;
    const s = this.sectorSize;
    for (let i = 0, at = b.start; at < b.start + this.blockSize; i++, at += s) {
      if (((b.mask >>> i) & 1) === 0 || at + s <= start || at >= end) continue;
      const from = Math.max(at, start);
      const to = Math.min(at + s, end);
      view.set(b.data.subarray(from - b.start, to - b.start), from - start);
    }
  }

  /** Mask bits of the sectors of `block` inside [from, to). */
  #bits(block: PartialBlock, from: number, to: number): number {
    const first = Math.max(0, Math.ceil((from - block.start) / this.sectorSize));
    const last = Math.min(this.blockSize / this.sectorSize, Math.floor((to - block.start) / this.sectorSize));
    let bits = 0;
    for (let i = first; i < last; i++) bits |= 1 << i;
    return bits >>> 0;
  }
}
