/**
 * The copy steps the block jobs share: copying one extent, and draining a
 * dirty bitmap into a target. Each call does at most one bounded chunk of I/O,
 * so the job loop can check for pause and cancel between calls.
 */
import type { DirtyBitmap } from '../block/dirty-bitmap.js';
import type { ChainExtent, ImageNode } from '../block/types.js';

/** Default size of one copy step (QEMU's mirror uses up to 1 MiB per request). */
export const COPY_CHUNK = 1024 * 1024;

/**
 * Size of a first-pass step when the kernel copies between the host files and
 * no speed limit is set: the step's cost is its bookkeeping (block status,
 * planning, one pool trip), not its bytes, so fewer, larger steps cost less
 * (1 GiB commit, CPU 1.25 s with 1 MiB steps, 1.02 s with 4 MiB, 0.97 s with
 * 8 MiB; medians of 3). A cancel still waits for at most a few milliseconds
 * of copying. Parts the kernel cannot copy go through the 1 MiB buffer.
 */
export const HOST_COPY_STEP = 8 * 1024 * 1024;

/** What a job reads the source through: the node (tracked) or its driver under a quiesce. */
export type ReadFn = (offset: number, buf: Uint8Array) => Promise<void>;

/** Why a copy step failed: which side, for BLOCK_JOB_ERROR's `operation`. */
export class CopyError extends Error {
  override readonly name = 'CopyError';
  readonly operation: 'read' | 'write';
  constructor(operation: 'read' | 'write', cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause), { cause });
    this.operation = operation;
  }
}

/** Reads [offset, offset+buf.length) with `read` and writes it to `target`; errors say which side failed. */
export async function copyRange(read: ReadFn, target: ImageNode, range: { readonly offset: number; readonly buf: Uint8Array }): Promise<void> {
  try {
    await read(range.offset, range.buf);
  } catch (e) {
    throw new CopyError('read', e);
  }
  try {
    await target.write(range.offset, range.buf);
  } catch (e) {
    throw new CopyError('write', e);
  }
}

/**
 * The copy step of a job whose source and target are nodes: between their
 * host files inside the kernel where both sides allow it (copy_file_range:
 * the bytes never enter JS, one page-cache copy instead of a read into a
 * buffer and a write out of it, and on the thread pool, so the event loop
 * does the job's bookkeeping meanwhile), the rest through the step's buffer.
 * Once the target refuses a host range (another file system, no addon, a
 * format without the path), this job copies through memory only.
 * VDISK_NO_HOST_COPY=1 turns the kernel path off (A/B measurements).
 */
export class NodeCopier {
  readonly #source: ImageNode;
  readonly #target: ImageNode;
  #viaHost: boolean;
  /** Reads the source through its node (tracked). */
  readonly #read: ReadFn;

  constructor(source: ImageNode, target: ImageNode) {
    this.#source = source;
    this.#target = target;
    this.#viaHost = source.copyViaHost !== undefined && target.writeFromHost !== undefined && process.env['VDISK_NO_HOST_COPY'] !== '1';
    this.#read = (o, b) => source.read(o, b);
  }

  /** True while the kernel path is on (the job may take larger steps: HOST_COPY_STEP). */
  get viaHost(): boolean {
    return this.#viaHost;
  }

  /**
   * Copies [offset, offset+length): the kernel copies what it can, `buf` (any
   * size) carries the rest a piece at a time, and the kernel is tried again
   * after each piece. Errors say which side failed (a failed kernel copy
   * counts as the target's).
   */
  async copy(offset: number, length: number, buf: Uint8Array): Promise<void> {
    for (let done = 0; done < length; ) {
      if (this.#viaHost) {
        done += await this.#copyViaHost(offset + done, length - done);
        if (done >= length) return;
      }
      const n = Math.min(buf.length, length - done);
      await copyRange(this.#read, this.#target, { offset: offset + done, buf: buf.subarray(0, n) });
      done += n;
    }
  }

  async #copyViaHost(offset: number, length: number): Promise<number> {
    const { copied, refused } = await copyBetweenHosts(this.#source, this.#target, { offset, length, shift: 0 });
    if (refused) this.#viaHost = false;
    return copied;
  }
}

/**
 * Copies [offset, offset+length) of `source` to `target` at `offset + shift`
 * between their host files, inside the kernel, for as long as both allow it:
 * the bytes copied (a prefix) and whether the target refused a host range
 * (the caller then copies through memory). Errors say which side failed (a
 * failed kernel copy counts as the target's).
 */
export async function copyBetweenHosts(
  source: ImageNode,
  target: ImageNode,
  range: { readonly offset: number; readonly length: number; readonly shift: number },
): Promise<{ copied: number; refused: boolean }> {
  let refused = false;
  try {
    const copied =
      (await source.copyViaHost?.(range.offset, range.length, async (at, src) => {
        let ok: boolean;
        try {
          ok = (await target.writeFromHost?.(at + range.shift, src)) ?? false;
        } catch (e) {
          throw new CopyError('write', e);
        }
        refused = !ok;
        return ok;
      })) ?? 0;
    return { copied, refused };
  } catch (e) {
    throw e instanceof CopyError ? e : new CopyError('read', e);
  }
}

/** Writes zeros to `target` over a range, allowing it to unmap. */
export async function zeroRange(target: ImageNode, offset: number, length: number): Promise<void> {
  try {
    await target.writeZeroes(offset, length, { mayUnmap: true });
  } catch (e) {
    throw new CopyError('write', e);
  }
}

/** Block status of a source, with failures reported as read errors. */
export async function statusOf(
  source: ImageNode,
  range: { readonly offset: number; readonly length: number },
  base: ImageNode | null,
): Promise<ChainExtent[]> {
  try {
    return await source.blockStatus(range.offset, range.length, { base });
  } catch (e) {
    throw new CopyError('read', e);
  }
}

/**
 * Copies every dirty range from `read` to `target`, up to `inFlight` copies at
 * once, until the bitmap is clean: the last sync of a job under a quiesce,
 * where the guest waits for it (one chunk at a time, a mirror completed under a
 * 4 KiB random write load held the guest for 28 ms, most of the time from
 * job-complete to BLOCK_JOB_COMPLETED). The caller keeps writers off: no
 * range is dirtied meanwhile except by a failed copy, which is rethrown.
 */
export async function copyAllDirty(
  bitmap: DirtyBitmap,
  io: { readonly read: ReadFn; readonly target: ImageNode },
  options: { readonly chunk: number; readonly inFlight: number },
): Promise<void> {
  const pool = new CopyPool(options.inFlight, options.chunk);
  try {
    while (bitmap.count > 0) {
      for (let range = bitmap.nextDirty(0, options.chunk); range; range = bitmap.nextDirty(range.offset + range.length, options.chunk)) {
        const { offset, length } = range;
        bitmap.clear(offset, length);
        await pool.add(async (buf) => {
          try {
            await copyRange(io.read, io.target, { offset, buf: buf.subarray(0, length) });
          } catch (e) {
            bitmap.set(offset, length);
            throw e;
          }
        }, range);
      }
      await pool.drain();
    }
  } finally {
    await pool.drain();
  }
}

/**
 * Copies the dirty parts of `range` only (never beyond it, unlike
 * copyNextDirty): for a caller that holds a lock on exactly that range.
 * Returns the bytes copied.
 */
export async function copyDirtyWithin(
  bitmap: DirtyBitmap,
  io: { readonly read: ReadFn; readonly target: ImageNode },
  range: { readonly offset: number; readonly length: number },
): Promise<number> {
  const end = range.offset + range.length;
  let copied = 0;
  for (let pos = range.offset; pos < end; ) {
    const dirty = bitmap.nextDirty(pos, end - pos);
    if (!dirty || dirty.offset >= end) break;
    const length = Math.min(dirty.length, end - dirty.offset);
    bitmap.clear(dirty.offset, length);
    try {
      await copyRange(io.read, io.target, { offset: dirty.offset, buf: new Uint8Array(length) });
    } catch (e) {
      bitmap.set(dirty.offset, length);
      throw e;
    }
    copied += length;
    pos = dirty.offset + length;
  }
  return copied;
}

/** A bitmap that follows the writes of a node; returns the detach function. */
export function trackWrites(
  node: { addWriteObserver(o: { before(e: { offset: number; length: number }): void; after(e: { offset: number; length: number }): void }): () => void },
  bitmap: DirtyBitmap,
): () => void {
  const mark = (e: { offset: number; length: number }): void => bitmap.set(e.offset, e.length);
  return node.addWriteObserver({ before: mark, after: mark });
}

/**
 * Flushes a copy target in the background every `every` bytes, one flush at a
 * time, so its page cache goes to the device while the copy keeps the CPU
 * busy. Without it, every sync the target's format must do anyway (a new qcow2
 * L2 table waits for one; so does READY) wrote out everything copied since the
 * last one while the copy stood still: four such syncs of about 0.17 s each
 * were 40 % of a 1 GiB mirror. A background flush that fails is not reported
 * here: the target's next flush meets the error again.
 *
 * The caller starts a flush with no copy in flight (`due`, then `start` after
 * draining its steps): a qcow2 flush first waits until no allocation is in
 * flight, which four steps always in flight would put off until the end.
 */
export class WriteBehind {
  readonly #target: Pick<ImageNode, 'flush'>;
  readonly #every: number;
  #since = 0;
  #pending: Promise<void> | null = null;

  constructor(target: Pick<ImageNode, 'flush'>, every: number) {
    this.#target = target;
    this.#every = every;
  }

  /** Counts `bytes` copied; true when a flush should start now. */
  due(bytes: number): boolean {
    this.#since += bytes;
    return this.#since >= this.#every && this.#pending === null;
  }

  /** Starts a flush in the background. */
  start(): void {
    this.#since = 0;
    this.#pending = this.#target.flush().then(
      () => {
        this.#pending = null;
      },
      () => {
        this.#pending = null;
      },
    );
  }

  /** Waits for the flush in flight, if any. */
  async settle(): Promise<void> {
    await this.#pending;
  }
}

/** A byte range. */
export interface CopyRange {
  readonly offset: number;
  readonly length: number;
}

/**
 * At most `max` copy steps in flight (QEMU's mirror keeps up to 16). `add`
 * waits for a free slot, and for the steps in flight over an overlapping range
 * (two copies of one range could land on the target in the wrong order); the
 * first failure is rethrown by the next `add` or by `drain`, after every step
 * in flight has settled.
 *
 * Each step gets a buffer of `bufferSize` bytes that no other step in flight
 * holds; buffers are reused from step to step (a fresh 1 MiB Uint8Array per
 * chunk cost its zero-fill and garbage collection: a fifth of the mirror's CPU).
 */
export class CopyPool {
  readonly #max: number;
  readonly #bufferSize: number;
  readonly #running = new Map<Promise<void>, CopyRange | null>();
  readonly #spare: Uint8Array[] = [];
  #failure: { error: unknown } | null = null;

  constructor(max: number, bufferSize = 0) {
    this.#max = Math.max(1, max);
    this.#bufferSize = bufferSize;
  }

  /** Steps in flight. */
  get size(): number {
    return this.#running.size;
  }

  async add(step: (buf: Uint8Array) => Promise<void>, range: CopyRange | null = null): Promise<void> {
    while (this.#running.size >= this.#max || (range && this.#overlapsRunning(range))) await Promise.race(this.#running.keys());
    this.#rethrow();
    const buf = this.#spare.pop() ?? new Uint8Array(this.#bufferSize);
    const p: Promise<void> = step(buf).then(
      () => {
        this.#running.delete(p);
        this.#spare.push(buf);
      },
      (e: unknown) => {
        // Not reused: a failed write might still be holding it.
        this.#running.delete(p);
        this.#failure ??= { error: e };
      },
    );
    this.#running.set(p, range);
  }

  async drain(): Promise<void> {
    while (this.#running.size > 0) await Promise.race(this.#running.keys());
    this.#rethrow();
  }

  #overlapsRunning(range: CopyRange): boolean {
    for (const r of this.#running.values()) {
      if (r && r.offset < range.offset + range.length && range.offset < r.offset + r.length) return true;
    }
    return false;
  }

  #rethrow(): void {
    if (!this.#failure) return;
    const { error } = this.#failure;
    this.#failure = null;
    throw error;
  }
}
