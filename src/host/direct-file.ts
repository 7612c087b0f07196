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
 *    whose aligned extents overlap are serialised so an edge is never lost.
 * Where the file system refuses O_DIRECT, `openDirect` returns a buffered file.
 */
import * as fs from 'node:fs';
import { fromSystemError, VdiskError } from '../errors.js';
import type { HostFile, HostOpenOptions } from './host-file.js';
import { NodeHostFile } from './node-file.js';

const SLAB_BYTES = 4 * 1024 * 1024;
/** Largest single transfer; bigger requests are split. */
const MAX_TRANSFER = 1024 * 1024;
const PAGE = 4096;

function errnoOf(e: unknown): string | undefined {
  if (e instanceof VdiskError) return e.code;
  return (e as { code?: string } | null)?.code;
}

function pread(fd: number, buf: Uint8Array, offset: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, buf.length, offset, (err, n) => (err ? reject(err) : resolve(n))));
}

function pwrite(fd: number, buf: Uint8Array, offset: number): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buf, 0, buf.length, offset, (err, n) => (err ? reject(err) : resolve(n))));
}

/**
 * Memory whose start is page aligned. A WebAssembly memory is mapped by V8's
 * page allocator, so its buffer starts on a page; ext4 treats direct I/O from
 * memory that is not block aligned as unaligned and serialises it.
 */
function pageAlignedBytes(length: number): Uint8Array {
  const pages = Math.ceil(length / 65536);
  // The compiler's lib has no WebAssembly types (no DOM lib); Node has the global.
  const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => { readonly buffer: ArrayBuffer } } }).WebAssembly;
  return new Uint8Array(new wasm.Memory({ initial: pages, maximum: pages }).buffer, 0, length);
}

/** Aligned bounce buffers, by power-of-two size class (4 KiB .. MAX_TRANSFER + alignment). */
class BouncePool {
  readonly #free = new Map<number, Uint8Array[]>();
  #slab: Uint8Array | null = null;
  #used = 0;
  readonly #newSlab: () => Promise<Uint8Array>;

  constructor(newSlab: () => Promise<Uint8Array>) {
    this.#newSlab = newSlab;
  }

  static classOf(length: number): number {
    let c = PAGE;
    while (c < length) c *= 2;
    return c;
  }

  /** A pooled buffer of `length`'s class, or null when a new one must be cut (see `take`). */
  takePooled(length: number): Uint8Array | null {
    return this.#free.get(BouncePool.classOf(length))?.pop() ?? null;
  }

  async take(length: number): Promise<Uint8Array> {
    const cls = BouncePool.classOf(length);
    const hit = this.#free.get(cls)?.pop();
    if (hit) return hit;
    if (this.#slab === null || this.#used + cls > this.#slab.length) {
      this.#slab = await this.#newSlab();
      this.#used = 0;
    }
    const b = this.#slab.subarray(this.#used, this.#used + cls);
    this.#used += cls;
    return b;
  }

  give(b: Uint8Array): void {
    const cls = b.length;
    let list = this.#free.get(cls);
    if (!list) this.#free.set(cls, (list = []));
    list.push(b);
  }
}

export class DirectHostFile implements HostFile {
  readonly path: string;
  readonly readOnly: boolean;
  readonly #inner: NodeHostFile;
  readonly #fd: number;
  /** Offset and length alignment of transfers. */
  readonly #align: number;
  readonly #pool: BouncePool;
  /** Aligned extents of writes in progress: [start, end, done]. */
  readonly #writing = new Set<{ readonly start: number; readonly end: number; readonly done: Promise<void> }>();

  /**
   * The file's size as callers see it. Padded writes may extend the file past
   * it for a moment; each trims the file back to it afterwards.
   */
  #size: number;

  private constructor(inner: NodeHostFile, align: number, size: number) {
    this.#inner = inner;
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
      return new DirectHostFile(inner, align, await inner.size());
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
    try {
      const view = bounce.subarray(0, end - start);
      const got = await this.#preadAligned(view, start);
      view.fill(0, got);
      buf.set(view.subarray(offset - start, offset - start + buf.length));
    } finally {
      this.#pool.give(bounce);
    }
  }

  /** Reads an aligned extent; returns the bytes before the end of the file. */
  async #preadAligned(view: Uint8Array, start: number): Promise<number> {
    let got = 0;
    try {
      while (got < view.length) {
        const n = await pread(this.#fd, view.subarray(got), start + got);
        if (n === 0 || n % this.#align !== 0) return got + n;
        got += n;
      }
    } catch (e) {
      throw fromSystemError(e, this.path, `read ${view.length} bytes at offset ${start} of`);
    }
    return got;
  }

  write(buf: Uint8Array, offset: number): Promise<void> {
    return this.writev([buf], offset);
  }

  async writev(bufs: readonly Uint8Array[], offset: number): Promise<void> {
    if (this.readOnly) throw new VdiskError('EPERM', `'${this.path}' is open read-only`, { file: this.path });
    const total = bufs.reduce((n, b) => n + b.length, 0);
    let pos = 0;
    let bi = 0;
    let within = 0;
    // Pieces of at most MAX_TRANSFER bytes, each gathered from the buffers straight into
    // its bounce buffer (a piece inside one buffer is that buffer's view: no extra copy).
    while (pos < total) {
      const n = Math.min(MAX_TRANSFER, total - pos);
      const first = bufs[bi];
      if (first && first.length - within >= n) {
        await this.#writePiece([first.subarray(within, within + n)], n, offset + pos);
        within += n;
        if (within === first.length) {
          bi++;
          within = 0;
        }
      } else {
        const parts: Uint8Array[] = [];
        for (let filled = 0; filled < n; ) {
          const b = bufs[bi];
          if (!b) break;
          const take = Math.min(b.length - within, n - filled);
          parts.push(b.subarray(within, within + take));
          filled += take;
          within += take;
          if (within === b.length) {
            bi++;
            within = 0;
          }
        }
        await this.#writePiece(parts, n, offset + pos);
      }
      pos += n;
    }
  }

  /** Writes the `length` bytes of `parts`, back to back, at `offset`. */
  async #writePiece(parts: readonly Uint8Array[], length: number, offset: number): Promise<void> {
    const start = offset - (offset % this.#align);
    const end = Math.ceil((offset + length) / this.#align) * this.#align;
    // Wait for writes overlapping the aligned extent (their edges may be ours).
    for (let overlapping = this.#overlapping(start, end); overlapping !== null; overlapping = this.#overlapping(start, end)) {
      await overlapping;
    }
    let finish!: () => void;
    const entry = { start, end, done: new Promise<void>((r) => (finish = r)) };
    this.#writing.add(entry);
    let bounce: Uint8Array;
    try {
      bounce = this.#pool.takePooled(end - start) ?? (await this.#pool.take(end - start));
    } catch (e) {
      this.#writing.delete(entry);
      finish();
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
      try {
        for (let done = 0; done < view.length; ) done += await pwrite(this.#fd, view.subarray(done), start + done);
      } catch (e) {
        throw fromSystemError(e, this.path, `write ${length} bytes at offset ${offset} of`);
      }
      // The padding must not grow the file past what was asked.
      if (end > this.#size) await this.#inner.truncate(this.#size);
    } finally {
      this.#pool.give(bounce);
      this.#writing.delete(entry);
      finish();
    }
  }

  /** What to wait for before writing the aligned extent [start, end), or null when nothing overlaps it. */
  #overlapping(start: number, end: number): Promise<unknown> | null {
    let waits: Promise<void>[] | null = null;
    for (const w of this.#writing) {
      if (w.start < end && w.end > start) (waits ??= []).push(w.done);
    }
    return waits === null ? null : Promise.all(waits);
  }

  async #edge(block: Uint8Array, at: number): Promise<void> {
    const got = await this.#preadAligned(block, at);
    block.fill(0, got);
  }

  sync(): Promise<void> {
    return this.#inner.sync();
  }
  async truncate(length: number): Promise<void> {
    this.#size = length;
    await this.#inner.truncate(length);
  }
  punchHole(offset: number, length: number): Promise<boolean> {
    return this.#inner.punchHole(offset, length);
  }
  zeroRange(offset: number, length: number): Promise<boolean> {
    return this.#inner.zeroRange(offset, length);
  }
  allocate(offset: number, length: number): Promise<boolean> {
    return this.#inner.allocate(offset, length);
  }
  seekData(offset: number): Promise<number | null> {
    return this.#inner.seekData(offset);
  }
  seekHole(offset: number): Promise<number> {
    return this.#inner.seekHole(offset);
  }
  allocatedSize(): Promise<number> {
    return this.#inner.allocatedSize();
  }
  close(): Promise<void> {
    return this.#inner.close();
  }
}
