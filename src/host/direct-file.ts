/**
 * A host file opened with O_DIRECT (cache=none, directsync), with the
 * alignment O_DIRECT demands handled here, as QEMU's file-posix does with its
 * bounce buffers:
 *  - the file-offset alignment (512 or 4096) and the memory alignment are
 *    probed once at open by trying reads (raw_probe_alignment);
 *  - every transfer goes through an aligned bounce buffer from a per-file
 *    pool (Node cannot allocate aligned memory, so a slab's aligned start is
 *    found by probing too);
 *  - unaligned writes read-modify-write the blocks at their edges; writes
 *    whose aligned extents overlap are serialised so an edge is never lost;
 *  - transfers go to the kernel through an io_uring where the addon has one
 *    (host-ring.ts), else through libuv's thread pool;
 *  - where the file system's block is larger than the sector (ext4: 4 KiB on
 *    512-byte sectors), sector-aligned writes that leave a block partly
 *    written hold that part in memory until a neighbouring write completes the
 *    block (partial-blocks.ts, held-blocks.ts): ext4 runs a direct write that
 *    is not block-aligned alone, after waiting for every other one. Held data
 *    is read back from memory and reaches the disk by the next sync at the
 *    latest.
 * Where the file system refuses O_DIRECT, `openDirect` returns a buffered file.
 */
import * as fs from 'node:fs';
import { fromSystemError, VdiskError } from '../errors.js';
import type { HostFile, HostOpenOptions } from './host-file.js';
import { RingPair } from './ring-pair.js';
import { PartialBlocks, type PartialBlock } from './partial-blocks.js';
import { HeldBlocks } from './held-blocks.js';
import { pageAlignedBytes } from '../util/page-aligned.js';
import { sliceParts } from '../util/byte-parts.js';
import { BouncePool } from './bounce-pool.js';
import { WriteClaims, type WriteClaim } from './write-claims.js';
import { NodeHostFile } from './node-file.js';
import { preadFd, pwriteFd } from './fs-calls.js';

const SLAB_BYTES = 4 * 1024 * 1024;
/** Largest single transfer; bigger requests are split. */
const MAX_TRANSFER = 1024 * 1024;
const PAGE = 4096;

function errnoOf(e: unknown): string | undefined {
  if (e instanceof VdiskError) return e.code;
  return (e as { code?: string } | null)?.code;
}

function pread(fd: number, buf: Uint8Array, offset: number): Promise<number> {
  return preadFd(fd, buf, 0, buf.length, offset);
}

function pwrite(fd: number, buf: Uint8Array, offset: number): Promise<number> {
  return pwriteFd(fd, buf, 0, buf.length, offset);
}

export class DirectHostFile implements HostFile {
  readonly path: string;
  readonly readOnly: boolean;
  readonly device: boolean;
  readonly #inner: NodeHostFile;
  readonly #fd: number;
  /** Offset and length alignment of transfers. */
  readonly #align: number;
  readonly #pool: BouncePool;
  readonly #ring: RingPair | null;
  /** Null: every write goes straight to the disk (directsync, or blocks no larger than sectors). */
  readonly #partials: PartialBlocks | null;
  /** The write-out of those blocks (null with them). */
  readonly #held: HeldBlocks | null;
  /** Reads from the disk in flight, with when each began (a PartialBlocks stamp). */
  readonly #reads = new Set<{ readonly began: number }>();
  /** Aligned extents of writes in progress. */
  readonly #writing = new WriteClaims();

  /**
   * The file's size as callers see it. Padded writes may extend the file past
   * it for a moment; each trims the file back to it afterwards.
   */
  #size: number;

  private constructor(inner: NodeHostFile, align: number, size: number, ring: RingPair | null, partials: PartialBlocks | null) {
    this.#inner = inner;
    this.device = inner.device;
    this.#ring = ring;
    this.#partials = partials;
    this.#size = size;
    this.path = inner.path;
    this.readOnly = inner.readOnly;
    this.#fd = inner.fd;
    this.#align = align;
    this.#pool = new BouncePool(async () => {
      const raw = pageAlignedBytes(SLAB_BYTES + PAGE);
      const start = await DirectHostFile.#probeMemory(this.#fd, raw);
      return raw.subarray(start, start + SLAB_BYTES);
    });
    this.#held =
      partials === null
        ? null
        : new HeldBlocks(partials, {
            pool: this.#pool,
            claim: (start, end) => this.#claim(start, end),
            claimNow: (start, end) => (this.#writing.overlaps(start, end) ? null : this.#writing.claim(start, end)),
            release: (claim) => this.#writing.release(claim),
            preadAligned: (view, start) => this.#preadAligned(view, start),
            pwriteAll: (view, start, length, offset) => this.#pwriteAll(view, start, length, offset),
            writeExtent: (parts, length, offset) => this.#writeExtent(parts, length, offset),
            trimPast: async (end) => {
              if (end > this.#size) await this.#inner.truncate(this.#size);
            },
            purgeLanded: () => this.#purgeLanded(),
          });
  }

  /** Writes every held block to the disk (calls that read or change what the disk holds do first). */
  async #writeOutHeld(): Promise<void> {
    if (this.#held !== null) await this.#held.writeOutAll();
  }

  /** Opens `path` with O_DIRECT where the file system allows it, else buffered. */
  static async openDirect(path: string, options: HostOpenOptions): Promise<HostFile> {
    let inner: NodeHostFile;
    try {
      inner = await NodeHostFile.open(path, { ...options, direct: true });
    } catch (e) {
      if (errnoOf(e) !== 'EINVAL') throw e;
      const { direct: _direct, ...rest } = options;
      return NodeHostFile.open(path, rest);
    }
    try {
      const probe = pageAlignedBytes(3 * PAGE);
      const mem = await DirectHostFile.#probeMemory(inner.fd, probe);
      const aligned = probe.subarray(mem, mem + PAGE);
      const align = (await DirectHostFile.#tryRead(inner.fd, aligned.subarray(0, 512), 512)) ? 512 : PAGE;
      const block = fs.fstatSync(inner.fd).blksize;
      // Holding completed writes in memory is the volatile write cache cache=none offers; directsync promises none.
      const hold = process.env['VDISK_NO_HOLD'] !== '1' && !options.dsync && !inner.readOnly && block > align && block % align === 0 && block / align <= 32 && block <= 64 * 1024;
      return new DirectHostFile(inner, align, await inner.size(), RingPair.open(), hold ? new PartialBlocks(block, align) : null);
    } catch (e) {
      await inner.close();
      throw e;
    }
  }

  static async #tryRead(fd: number, buf: Uint8Array, offset: number): Promise<boolean> {
    try {
      await pread(fd, buf, offset);
      return true;
    } catch (e) {
      if (errnoOf(e) === 'EINVAL') return false;
      throw e;
    }
  }

  /** The first offset into `raw` whose memory O_DIRECT accepts (tried every 8 bytes). */
  static async #probeMemory(fd: number, raw: Uint8Array): Promise<number> {
    for (let k = 0; k < PAGE; k += 8) {
      if (await DirectHostFile.#tryRead(fd, raw.subarray(k, k + PAGE), 0)) return k;
    }
    throw new VdiskError('EINVAL', `'${raw.length}': no aligned buffer found for O_DIRECT`, {});
  }

  async size(): Promise<number> {
    return this.#size;
  }

  /** Partly written blocks held in memory now, not yet on their way to the disk. */
  get heldBlocks(): number {
    return this.#partials?.openCount ?? 0;
  }

  /** The block size whose partly written blocks are held in memory, or null when none are (see the header). */
  get partialBlockSize(): number | null {
    return this.#partials?.blockSize ?? null;
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    for (let done = 0; done < buf.length; ) {
      const n = Math.min(MAX_TRANSFER, buf.length - done);
      await this.#readPiece(buf.subarray(done, done + n), offset + done);
      done += n;
    }
  }

  async #readPiece(buf: Uint8Array, offset: number): Promise<void> {
    const start = offset - (offset % this.#align);
    const end = Math.ceil((offset + buf.length) / this.#align) * this.#align;
    const bounce = this.#pool.takePooled(end - start) ?? (await this.#pool.take(end - start));
    // Held blocks that land while this read runs stay laid over it (see PartialBlocks.landed).
    const read = this.#partials === null ? null : { began: this.#partials.stamp() };
    if (read !== null) this.#reads.add(read);
    try {
      const view = bounce.subarray(0, end - start);
      const got = await this.#preadAligned(view, start);
      view.fill(0, got);
      this.#partials?.overlay(view, start);
      buf.set(view.subarray(offset - start, offset - start + buf.length));
    } finally {
      this.#pool.give(bounce);
      if (read !== null) {
        this.#reads.delete(read);
        this.#purgeLanded();
      }
    }
  }

  /** Gives back the memory of landed blocks no read in flight began before. */
  #purgeLanded(): void {
    if (this.#partials === null) return;
    let oldest: number | null = null;
    for (const r of this.#reads) if (oldest === null || r.began < oldest) oldest = r.began;
    this.#giveEmptied(this.#partials.purge(oldest));
  }

  /** Reads an aligned extent; returns the bytes before the end of the file. */
  async #preadAligned(view: Uint8Array, start: number): Promise<number> {
    let got = 0;
    try {
      while (got < view.length) {
        const piece = view.subarray(got);
        const n = await (this.#ring ? this.#ring.read(this.#fd, piece, start + got) : pread(this.#fd, piece, start + got));
        if (n === 0 || n % this.#align !== 0) return got + n;
        got += n;
      }
    } catch (e) {
      throw fromSystemError(e, this.path, `read ${view.length} bytes at offset ${start} of`);
    }
    return got;
  }

  write(buf: Uint8Array, offset: number): Promise<void> {
    // The common request: aligned, one transfer, no block to hold, nothing overlapping, a bounce
    // buffer free. It goes to the kernel in this call, with no await before it.
    const length = buf.length;
    const end = offset + length;
    if (
      length > 0 &&
      length <= MAX_TRANSFER &&
      offset % this.#align === 0 &&
      length % this.#align === 0 &&
      !this.readOnly &&
      (this.#partials === null || (offset % this.#partials.blockSize === 0 && length % this.#partials.blockSize === 0)) &&
      !this.#writing.overlaps(offset, end)
    ) {
      const bounce = this.#pool.takePooled(length);
      if (bounce !== null) return this.#writeAlignedNow(buf, offset, bounce);
    }
    return this.writev([buf], offset);
  }

  /**
   * No async frame, and one promise layer over the kernel's: this runs once
   * per guest request, and its objects were a large share of what a request
   * allocated (the scavenges of a depth-16 stream).
   */
  #writeAlignedNow(buf: Uint8Array, offset: number, bounce: Uint8Array): Promise<void> {
    const length = buf.length;
    const end = offset + length;
    const claim = this.#writing.claim(offset, end);
    const issued = this.#partials?.stamp() ?? 0;
    const view = bounce.length === length ? bounce : bounce.subarray(0, length);
    view.set(buf);
    this.#size = Math.max(this.#size, end);
    let first: Promise<number>;
    try {
      first = this.#ring ? this.#ring.write(this.#fd, view, offset) : pwrite(this.#fd, view, offset);
    } catch (e) {
      this.#alignedDone(bounce, claim);
      return Promise.reject(this.#writeError(e, length, offset));
    }
    return first.then(
      (n) => {
        if (n >= length) {
          this.#alignedWritten(bounce, claim, offset, end, issued);
          return undefined;
        }
        return this.#pwriteRest(view, offset, n).then(
          () => this.#alignedWritten(bounce, claim, offset, end, issued),
          (e: unknown) => {
            this.#alignedDone(bounce, claim);
            throw this.#writeError(e, length, offset);
          },
        );
      },
      (e: unknown) => {
        this.#alignedDone(bounce, claim);
        throw this.#writeError(e, length, offset);
      },
    );
  }

  /** An aligned write of #writeAlignedNow is on the disk: newer than any block held for its sectors. */
  #alignedWritten(bounce: Uint8Array, claim: WriteClaim, offset: number, end: number, issued: number): void {
    try {
      if (this.#partials !== null) this.#giveEmptied(this.#partials.written(offset, end, issued));
    } finally {
      this.#alignedDone(bounce, claim);
    }
  }

  #alignedDone(bounce: Uint8Array, claim: WriteClaim): void {
    this.#pool.give(bounce);
    this.#writing.release(claim);
  }

  /** A failed write, named as the caller's request of `length` bytes at `offset`. */
  #writeError(e: unknown, length: number, offset: number): Error {
    return fromSystemError(e, this.path, `write ${length} bytes at offset ${offset} of`);
  }

  writev(bufs: readonly Uint8Array[], offset: number): Promise<void> {
    if (this.readOnly) return Promise.reject(new VdiskError('EPERM', `'${this.path}' is open read-only`, { file: this.path }));
    let total = 0;
    for (const b of bufs) total += b.length;
    if (total === 0) return Promise.resolve();
    // One piece (a guest request): no async frame before it reaches #writePiece.
    return total <= MAX_TRANSFER ? this.#writePiece(bufs, total, offset) : this.#writePieces(bufs, total, offset);
  }

  /** Pieces of at most MAX_TRANSFER bytes, each gathered from the buffers straight into its bounce buffer. */
  async #writePieces(bufs: readonly Uint8Array[], total: number, offset: number): Promise<void> {
    for (let pos = 0; pos < total; pos += MAX_TRANSFER) {
      const n = Math.min(MAX_TRANSFER, total - pos);
      await this.#writePiece(sliceParts(bufs, pos, pos + n), n, offset + pos);
    }
  }

  /** Writes the `length` bytes of `parts`, back to back, at `offset`. */
  #writePiece(parts: readonly Uint8Array[], length: number, offset: number): Promise<void> {
    const held = this.#held;
    if (held !== null && offset % this.#align === 0 && length % this.#align === 0) {
      const bs = held.blockSize;
      if (offset % bs !== 0 || (offset + length) % bs !== 0) {
        this.#size = Math.max(this.#size, offset + length);
        return held.write(parts, length, offset);
      }
    }
    return this.#writeExtent(parts, length, offset);
  }

  #giveEmptied(blocks: readonly PartialBlock[]): void {
    for (const b of blocks) this.#pool.give(b.data);
  }

  /**
   * Writes all of `view` at `start`; a failure names `length` bytes at `offset`
   * (the caller's request), the message built only then. This runs once per
   * request: the first write is issued in this call, with no async frame.
   */
  #pwriteAll(view: Uint8Array, start: number, length: number, offset: number): Promise<void> {
    const failed = (e: unknown): Error => this.#writeError(e, length, offset);
    const fail = (e: unknown): never => {
      throw failed(e);
    };
    let first: Promise<number>;
    try {
      first = this.#ring ? this.#ring.write(this.#fd, view, start) : pwrite(this.#fd, view, start);
    } catch (e) {
      return Promise.reject(failed(e));
    }
    return first.then((n) => (n >= view.length ? undefined : this.#pwriteRest(view, start, n).catch(fail)), fail);
  }

  /** The rest of a short write, from byte `done` of `view`. */
  async #pwriteRest(view: Uint8Array, start: number, done: number): Promise<void> {
    while (done < view.length) {
      const piece = view.subarray(done);
      done += await (this.#ring ? this.#ring.write(this.#fd, piece, start + done) : pwrite(this.#fd, piece, start + done));
    }
  }

  /** Writes the `length` bytes of `parts` at `offset` straight to the disk (read-modify-write of unaligned edges). */
  async #writeExtent(parts: readonly Uint8Array[], length: number, offset: number): Promise<void> {
    const start = offset - (offset % this.#align);
    const end = Math.ceil((offset + length) / this.#align) * this.#align;
    // The aligned extent's edges may be another write's: they go one after the other.
    const { done, issued } = await this.#claim(start, end);
    let bounce: Uint8Array;
    try {
      bounce = this.#pool.takePooled(end - start) ?? (await this.#pool.take(end - start));
    } catch (e) {
      done();
      throw e;
    }
    try {
      const view = bounce.subarray(0, end - start);
      this.#size = Math.max(this.#size, offset + length);
      if (start < offset || end > offset + length) {
        // Read-modify-write of the edge blocks.
        if (start < offset) await this.#edge(view.subarray(0, this.#align), start);
        if (end > offset + length && end - this.#align >= start + (start < offset ? this.#align : 0)) {
          await this.#edge(view.subarray(view.length - this.#align), end - this.#align);
        }
      }
      let at = offset - start;
      for (const part of parts) {
        view.set(part, at);
        at += part.length;
      }
      await this.#pwriteAll(view, start, length, offset);
      // The padding must not grow the file past what was asked.
      if (end > this.#size) await this.#inner.truncate(this.#size);
      // What this wrote is newer than anything held for the same sectors.
      if (this.#partials !== null) this.#giveEmptied(this.#partials.written(start, end, issued));
    } finally {
      this.#pool.give(bounce);
      done();
    }
  }

  /**
   * Waits until no write in progress overlaps the aligned extent [start, end),
   * then registers one there; returns the function that ends it and the
   * moment it was issued (in the order of held blocks' openings).
   */
  async #claim(start: number, end: number): Promise<{ readonly done: () => void; readonly issued: number }> {
    for (let overlapping = this.#writing.overlapping(start, end); overlapping !== null; overlapping = this.#writing.overlapping(start, end)) {
      await overlapping;
    }
    const claim = this.#writing.claim(start, end);
    return { done: () => this.#writing.release(claim), issued: this.#partials?.stamp() ?? 0 };
  }

  async #edge(block: Uint8Array, at: number): Promise<void> {
    const got = await this.#preadAligned(block, at);
    block.fill(0, got);
    this.#partials?.overlay(block, at);
  }

  // Calls that read or change what the disk holds first write out the blocks held in memory.
  async sync(): Promise<void> {
    await this.#writeOutHeld();
    if (this.#ring === null || this.readOnly) return this.#inner.sync();
    try {
      await this.#ring.datasync(this.#fd);
    } catch (e) {
      throw fromSystemError(e, this.path, 'sync');
    }
  }
  async truncate(length: number): Promise<void> {
    await this.#writeOutHeld();
    this.#size = length;
    await this.#inner.truncate(length);
  }
  async punchHole(offset: number, length: number): Promise<boolean> {
    await this.#writeOutHeld();
    return this.#inner.punchHole(offset, length);
  }
  // Both may extend the file (no KEEP_SIZE): the size callers see follows.
  async zeroRange(offset: number, length: number): Promise<boolean> {
    await this.#writeOutHeld();
    const done = await this.#inner.zeroRange(offset, length);
    if (done) this.#size = Math.max(this.#size, offset + length);
    return done;
  }
  async allocate(offset: number, length: number): Promise<boolean> {
    const done = await this.#inner.allocate(offset, length);
    if (done) this.#size = Math.max(this.#size, offset + length);
    return done;
  }
  async seekData(offset: number): Promise<number | null> {
    await this.#writeOutHeld();
    return this.#inner.seekData(offset);
  }
  async seekHole(offset: number): Promise<number> {
    await this.#writeOutHeld();
    return this.#inner.seekHole(offset);
  }
  async allocatedSize(): Promise<number> {
    await this.#writeOutHeld();
    return this.#inner.allocatedSize();
  }
  async close(): Promise<void> {
    try {
      if (!this.readOnly) await this.#writeOutHeld();
    } finally {
      await this.#ring?.close();
      await this.#inner.close();
    }
  }
}
