/**
 * The write-out of the partly written blocks a DirectHostFile holds in memory
 * (partial-blocks.ts keeps their bookkeeping): a sector-aligned write that
 * leaves blocks partly written merges its edges into held blocks and sends its
 * whole blocks to the disk; a held block goes to the disk once full, when the
 * oldest must make room, or when the file syncs (or anything else that reads or
 * changes the disk behind the holder's back).
 */
import { copyParts, sliceParts } from '../util/byte-parts.js';
import type { BouncePool } from './bounce-pool.js';
import type { PartialBlock, PartialBlocks } from './partial-blocks.js';
import type { WriteClaim } from './write-claims.js';

/** Partial blocks held at most; past it the oldest goes to the disk (read-modify-write). */
const MAX_HELD_BLOCKS = 64;

/** What the holder needs of its file's direct I/O. */
export interface BlockDisk {
  readonly pool: BouncePool;
  /** Waits until no write overlaps the aligned extent [start, end), then claims it until `done`. */
  claim(start: number, end: number): Promise<{ readonly done: () => void; readonly issued: number }>;
  /** `claim` when no write in progress overlaps [start, end): the claim, made in this call; else null. */
  claimNow(start: number, end: number): WriteClaim | null;
  /** Ends a claim of `claimNow`. */
  release(claim: WriteClaim): void;
  /** Reads the aligned extent at `start` into `view`; the bytes before the end of the file. */
  preadAligned(view: Uint8Array, start: number): Promise<number>;
  /** Writes all of `view` at `start`; a failure names the caller's `length` bytes at `offset`. */
  pwriteAll(view: Uint8Array, start: number, length: number, offset: number): Promise<void>;
  /** Writes `length` bytes of `parts` at `offset` straight to the disk. */
  writeExtent(parts: readonly Uint8Array[], length: number, offset: number): Promise<void>;
  /** A write that padded the file up to `end` trims it back to the size its callers see. */
  trimPast(end: number): Promise<void>;
  /** Gives back the memory of landed blocks no read in flight began before. */
  purgeLanded(): void;
}

const DONE: Promise<void> = Promise.resolve();

/** Settled write-outs: the first failure, once all have ended (no write is left running unseen). */
function throwFirstFailure(results: readonly PromiseSettledResult<void>[]): void {
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

export class HeldBlocks {
  readonly #partials: PartialBlocks;
  readonly #disk: BlockDisk;
  /** Write-outs of evicted blocks nobody awaits; writeOutAll does. */
  readonly #background = new Set<Promise<void>>();
  /** A background write-out failed: the next writeOutAll reports it (the write it held had completed). */
  #deferredError: unknown = null;

  constructor(partials: PartialBlocks, disk: BlockDisk) {
    this.#partials = partials;
    this.#disk = disk;
  }

  /** The file system's block, whose partly written ones are held. */
  get blockSize(): number {
    return this.#partials.blockSize;
  }

  /**
   * A sector-aligned write that leaves blocks partly written: its partial head
   * and tail blocks are merged into the held blocks (written out once full),
   * its whole blocks go to the disk. Done in this call when nothing has to
   * wait for memory (`#writeNow`), else through `#writeWaiting`.
   */
  write(parts: readonly Uint8Array[], length: number, offset: number): Promise<void> {
    return this.#writeNow(parts, length, offset) ?? this.#writeWaiting(parts, length, offset);
  }

  /** `write`, waiting for a buffer where the pool has none free. */
  async #writeWaiting(parts: readonly Uint8Array[], length: number, offset: number): Promise<void> {
    const partials = this.#partials;
    const pool = this.#disk.pool;
    const bs = partials.blockSize;
    const end = offset + length;
    const midStart = Math.min(end, Math.ceil(offset / bs) * bs);
    const midEnd = Math.max(midStart, Math.floor(end / bs) * bs);
    const held: Array<readonly [number, number]> = [];
    if (offset < midStart) held.push([offset, midStart]);
    if (midEnd < end) held.push([midEnd, end]);
    const full: PartialBlock[] = [];
    for (const [a, b] of held) {
      const start = a - (a % bs);
      let block = partials.get(start);
      if (block === undefined) {
        const data = pool.takePooled(bs) ?? (await pool.take(bs));
        block = partials.get(start);
        if (block === undefined) {
          block = this.#newBlock(start, data);
          partials.add(block);
          if (partials.openCount > MAX_HELD_BLOCKS) this.#evictOldest();
        } else {
          pool.give(data);
        }
      }
      const filled = this.#merge(parts, offset, a, b, block);
      if (filled !== null) full.push(filled);
    }
    const writes: Promise<void>[] = full.map((b) => this.#writeOut(b));
    if (midEnd > midStart) writes.push(this.#disk.writeExtent(sliceParts(parts, midStart - offset, midEnd - offset), midEnd - midStart, midStart));
    throwFirstFailure(await Promise.allSettled(writes));
  }

  /**
   * `write` done in this call when it need not wait for memory: the write has
   * no whole block of its own, and a pooled buffer is free for each block it
   * opens. The blocks it fills go to the disk before this returns (unless a
   * write in progress overlaps one: that one waits for it, as in `#writeWaiting`), and
   * the promise is their write-out, already resolved when it fills none.
   * Returns null otherwise, having changed nothing.
   *
   * Why: it is the seed's case, a stream of 4 KiB requests 512 bytes off the
   * blocks, each completing one held block and opening the next. Through
   * `#writeWaiting`'s awaits each of them cost the JS thread about 6 µs more than an
   * aligned request (its async frames, the claim's promise, allSettled), which at
   * depth 1 is latency the guest waits for.
   */
  #writeNow(parts: readonly Uint8Array[], length: number, offset: number): Promise<void> | null {
    const partials = this.#partials;
    const bs = partials.blockSize;
    const end = offset + length;
    // The piece in the first block, [offset, headEnd), and the rest, [headEnd, end), in the next one.
    const headEnd = Math.min(end, offset - (offset % bs) + bs);
    // A whole block of its own goes to the disk through `write`.
    if (headEnd - offset === bs || end - headEnd >= bs) return null;
    const headBlock = this.#pieceBlock(offset);
    if (headBlock === null) return null;
    const tailBlock = headEnd < end ? this.#pieceBlock(headEnd) : null;
    if (headEnd < end && tailBlock === null) {
      if (partials.get(headBlock.start) !== headBlock) this.#disk.pool.give(headBlock.data);
      return null;
    }
    const head = this.#merge(parts, offset, offset, headEnd, headBlock);
    const tail = tailBlock === null ? null : this.#merge(parts, offset, headEnd, end, tailBlock);
    // After both merges, so the block a piece was checked against is still the one it merges into.
    if (partials.openCount > MAX_HELD_BLOCKS) this.#evictOldest();
    const first = head === null ? null : (this.#writeOutNow(head) ?? this.#writeOut(head));
    const second = tail === null ? null : (this.#writeOutNow(tail) ?? this.#writeOut(tail));
    if (second === null) return first ?? DONE;
    if (first === null) return second;
    return Promise.allSettled([first, second]).then(throwFirstFailure);
  }

  /**
   * The block a piece starting at `from` merges into: the held one, or a new
   * one (not added yet) in a pooled buffer; null when no buffer is free.
   */
  #pieceBlock(from: number): PartialBlock | null {
    const partials = this.#partials;
    const start = from - (from % partials.blockSize);
    const held = partials.get(start);
    if (held !== undefined) return held;
    const data = this.#disk.pool.takePooled(partials.blockSize);
    return data === null ? null : this.#newBlock(start, data);
  }

  /** A block opened now at `start`, in the pooled buffer `data`, holding nothing yet. */
  #newBlock(start: number, data: Uint8Array): PartialBlock {
    const partials = this.#partials;
    return { start, born: partials.stamp(), data: data.subarray(0, partials.blockSize), mask: 0 };
  }

  /** Merges the piece [from, to) of the write at `offset` into `block` (adding it when new); returns it if that filled it. */
  #merge(parts: readonly Uint8Array[], offset: number, from: number, to: number, block: PartialBlock): PartialBlock | null {
    const partials = this.#partials;
    if (partials.get(block.start) !== block) partials.add(block);
    copyParts(parts, from - offset, to - offset, block.data, from - block.start);
    partials.hold(block, from, to);
    if (!partials.isFull(block)) return null;
    partials.retire(block);
    return block;
  }

  /**
   * A full block's write-out issued in this call, or null when a write in
   * progress overlaps it (then `#writeOut` waits for that). Its sectors are
   * all the callers', so the block ends inside the file: nothing to trim.
   */
  #writeOutNow(block: PartialBlock): Promise<void> | null {
    const bs = this.#partials.blockSize;
    const claim = this.#disk.claimNow(block.start, block.start + bs);
    if (claim === null) return null;
    const landed = (): void => {
      this.#partials.landed(block, this.#partials.stamp());
      this.#disk.release(claim);
      this.#disk.purgeLanded();
    };
    return this.#disk.pwriteAll(block.data, block.start, bs, block.start).then(landed, (e: unknown) => {
      landed();
      throw e;
    });
  }

  /** Writes every held block to the disk; reports a failed background write-out. */
  async writeOutAll(): Promise<void> {
    const open = this.#partials.openBlocks();
    for (const b of open) this.#partials.retire(b);
    const results = await Promise.allSettled([...open.map((b) => this.#writeOut(b)), ...this.#background]);
    const failed = results.find((r) => r.status === 'rejected');
    const error = this.#deferredError ?? (failed?.status === 'rejected' ? (failed.reason as unknown) : null);
    this.#deferredError = null;
    if (error !== null) throw error;
  }

  /** Writes a held block to the disk, reading the sectors it does not hold from there first. */
  async #writeOut(block: PartialBlock): Promise<void> {
    const partials = this.#partials;
    const start = block.start;
    const end = start + partials.blockSize;
    const { done } = await this.#disk.claim(start, end);
    try {
      // Writes that completed while this waited may have made its sectors stale: those come from the disk.
      if (block.mask !== 0) {
        if (!partials.isFull(block)) await this.#fillUnheld(block);
        await this.#disk.pwriteAll(block.data, start, partials.blockSize, start);
        await this.#disk.trimPast(end);
      }
    } finally {
      // Not `written`: every other block of this start holds newer data than this one.
      partials.landed(block, partials.stamp());
      done();
      this.#disk.purgeLanded();
    }
  }

  /** Fills the sectors of `block` it does not hold with what the disk has there. */
  async #fillUnheld(block: PartialBlock): Promise<void> {
    const partials = this.#partials;
    const pool = this.#disk.pool;
    const bs = partials.blockSize;
    const disk = pool.takePooled(bs) ?? (await pool.take(bs));
    try {
      const view = disk.subarray(0, bs);
      view.fill(0, await this.#disk.preadAligned(view, block.start));
      const s = partials.sectorSize;
      for (let i = 0; i * s < bs; i++) {
        if (((block.mask >>> i) & 1) === 0) block.data.set(view.subarray(i * s, (i + 1) * s), i * s);
      }
    } finally {
      pool.give(disk);
    }
  }

  #evictOldest(): void {
    const oldest = this.#partials.oldest();
    if (oldest === undefined) return;
    this.#partials.retire(oldest);
    const p: Promise<void> = this.#writeOut(oldest).then(
      () => void this.#background.delete(p),
      (e: unknown) => {
        this.#deferredError ??= e;
        this.#background.delete(p);
      },
    );
    this.#background.add(p);
  }
}
