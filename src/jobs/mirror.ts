/**
 * Mirror: make `target` a copy of `source` while the guest keeps using
 * `source`, then (on complete) switch the guest over to `target`.
 *
 * A dirty bitmap follows the source's writes from before the first pass.
 * Phase 1 copies what block status says the source defines (sync full: the
 * whole chain; top: the top image only, the target having the same backing;
 * none: nothing). Phase 2 copies dirty chunks until none are left; the target
 * is flushed; then the job is ready. After ready it keeps copying dirty
 * chunks. `complete` holds the source's requests, copies the last dirty
 * chunks, flushes the target and pivots. Cancel after ready (not forced) does
 * the same final sync without the pivot: the target is a consistent copy of
 * the source as of the cancel.
 *
 * copy-mode write-blocking: a guest write completes only once it is on the
 * target too (an observer copies it synchronously), so the mirror converges
 * whatever the write load.
 */
import { DirtyBitmap } from '../block/dirty-bitmap.js';
import type { BlockNode, WriteEvent } from '../block/node.js';
import type { ImageNode } from '../block/types.js';
import { VdiskError } from '../errors.js';
import { BlockCopyJob, type BlockJobOptions } from './block-job.js';
import type { PivotFn } from './commit.js';
import { COPY_CHUNK, CopyError, CopyPool, copyAllDirty, copyDirtyWithin, NodeCopier, statusOf, trackWrites, WriteBehind, zeroRange } from './copy.js';
import type { JobType } from './job.js';

export type MirrorSync = 'full' | 'top' | 'none';
export type CopyMode = 'background' | 'write-blocking';

/** QEMU's default buf-size: 16 requests of 1 MiB in flight. */
export const DEFAULT_BUF_SIZE = 16 * 1024 * 1024;

export interface MirrorOptions extends BlockJobOptions {
  readonly source: BlockNode;
  readonly target: ImageNode;
  readonly sync: MirrorSync;
  /** Dirty bitmap granularity; default from the source's cluster size as QEMU chooses it. */
  readonly granularity?: number;
  /** Bytes in flight at most; default 16 MiB. */
  readonly bufSize?: number;
  readonly copyMode?: CopyMode;
  /** The target reads as zeros already (a new image): holes need not be written. */
  readonly targetIsZero?: boolean;
  /** Where the source reads as zeros, unmap the target rather than writing zeros (QMP unmap, default true). */
  readonly unmap?: boolean;
  /** Switches the users of `source` to `target` on completion. */
  readonly pivot?: PivotFn;
}

/** QEMU's default granularity: the cluster size clamped to [4 KiB, 64 KiB], 64 KiB without clusters. */
export function defaultGranularity(clusterSize: number | undefined): number {
  if (clusterSize === undefined) return 64 * 1024;
  return Math.min(64 * 1024, Math.max(4096, clusterSize));
}

const READY_POLL_MS = 20;
/** Copy chunks of the first pass in flight at once. */
const IN_FLIGHT = 4;
/** Bytes copied between two background flushes of the target (see WriteBehind). */
const WRITE_BEHIND = 64 * 1024 * 1024;

export class MirrorJob extends BlockCopyJob {
  override readonly type: JobType = 'mirror';
  readonly source: BlockNode;
  readonly target: ImageNode;
  readonly sync: MirrorSync;
  readonly granularity: number;
  readonly bufSize: number;
  readonly copyMode: CopyMode;
  readonly #options: MirrorOptions;
  readonly #chunk: number;
  readonly #bitmap: DirtyBitmap;
  readonly #copier: NodeCopier;
  #detach: Array<() => void> = [];
  #cursor = 0;
  /** Source and target are identical and new writes reach both (QMP actively-synced). */
  #activelySynced = false;

  constructor(options: MirrorOptions) {
    super(options);
    if (options.source === options.target) throw new VdiskError('EINVAL', "Can't mirror node into itself");
    if (options.target.length < options.source.length) {
      throw new VdiskError('EINVAL', `Target '${options.target.filename}' (${options.target.length} bytes) is smaller than the source (${options.source.length} bytes)`, {
        file: options.target.filename,
      });
    }
    this.source = options.source;
    this.target = options.target;
    this.sync = options.sync;
    this.granularity = options.granularity ?? defaultGranularity(options.source.clusterSize);
    this.bufSize = options.bufSize ?? DEFAULT_BUF_SIZE;
    if (!Number.isSafeInteger(this.bufSize) || this.bufSize < 0) throw new VdiskError('EINVAL', `Invalid parameter 'buf-size'`, { field: 'buf-size' });
    this.copyMode = options.copyMode ?? 'background';
    this.#options = options;
    this.#bitmap = new DirtyBitmap(options.source.length, this.granularity);
    this.#copier = new NodeCopier(options.source, options.target);
    this.#chunk = Math.max(this.granularity, Math.min(COPY_CHUNK, this.bufSize || COPY_CHUNK));
  }

  get activelySynced(): boolean {
    return this.#activelySynced;
  }

  protected override get softCancelSupported(): boolean {
    return true;
  }

  protected override async body(): Promise<void> {
    const source = this.source;
    this.#detach.push(trackWrites(source, this.#bitmap));
    if (this.copyMode === 'write-blocking') this.#detach.push(source.addWriteObserver({ after: (e) => this.#writeThrough(e) }));
    this.setTotal(source.length);
    if (this.sync !== 'none') await this.#firstPass();
    else this.advance(source.length);
    await this.#drainDirty(() => false);
    await this.#flushTarget();
    this.markReady();
    const stop = (): boolean => this.completeRequested || this.cancelRequested;
    while (!stop()) {
      await this.pausePoint();
      if (!(await this.#drainDirty(stop))) {
        this.#activelySynced = this.copyMode === 'write-blocking';
        await this.idle(READY_POLL_MS);
      }
    }
    await this.pausePoint();
  }

  /**
   * Copies dirty chunks until the bitmap is clean with no copy in flight, or
   * `stop` says so; false when nothing was dirty. Background mode copies
   * several chunks at once (BlockCopyJob.copyDirty); write-blocking mode one
   * at a time under a range lock (see #copyDirtyStep).
   */
  async #drainDirty(stop: () => boolean): Promise<boolean> {
    if (this.#bitmap.count === 0) return false;
    if (this.copyMode === 'write-blocking') {
      while (this.#bitmap.count > 0 && !stop()) {
        await this.pausePoint();
        await this.#copyDirtyStep();
      }
      return true;
    }
    this.#activelySynced = false;
    return this.copyDirty({ bitmap: this.#bitmap, copier: this.#copier, chunk: this.#chunk, inFlight: IN_FLIGHT, stop });
  }

  async #firstPass(): Promise<void> {
    const { source, target } = this;
    const base = this.sync === 'top' ? source.backing : null;
    const skipHoles = this.#options.targetIsZero ?? false;
    const window = this.#chunk * 64;
    // Several chunks in flight (distinct ranges), as QEMU's mirror keeps up to 16 operations going:
    // one at a time leaves the disk idle between each read and write.
    const pool = new CopyPool(IN_FLIGHT, this.#chunk);
    const behind = new WriteBehind(target, WRITE_BEHIND);
    try {
      for (let pos = 0; pos < source.length; ) {
        await this.pausePoint();
        const length = Math.min(window, source.length - pos);
        const extents = await statusOf(source, { offset: pos, length }, base);
        for (const e of extents) {
          for (let off = e.offset; off < e.offset + e.length; ) {
            const n = Math.min(this.firstPassStep(this.#copier, this.#chunk), e.offset + e.length - off);
            // sync=top: what the top does not define comes from the target's own backing.
            const fromBelow = this.sync === 'top' && !e.present;
            if (fromBelow || (e.zero && skipHoles)) {
              this.advance(n);
            } else {
              // A zero extent comes from a block status that may be stale by now: a
              // guest write since then must stay dirty, or the zeroes would win.
              if (!e.zero) this.#bitmap.clear(off, n);
              const at = off;
              await pool.add(async (buf) => {
                const ok = await this.guarded(() =>
                  this.#excludingWriteThrough(at, n, () =>
                    e.zero ? zeroRange(target, at, n) : this.#copier.copy(at, n, buf),
                  ),
                );
                if (!ok) this.#bitmap.set(at, n);
              });
              await this.throttle(n);
              if (behind.due(n)) {
                await pool.drain();
                behind.start();
              }
            }
            off += n;
          }
        }
        pos += length;
      }
    } finally {
      await pool.drain();
      await behind.settle();
    }
  }

  /**
   * write-blocking: a guest write-through clears the range's dirty bit, so a copy of older source data
   * still in flight must not land on the target after it; guest writes to the range wait for the copy.
   */
  async #excludingWriteThrough<T>(offset: number, length: number, copy: () => Promise<T>): Promise<T> {
    if (this.copyMode !== 'write-blocking') return copy();
    const release = await this.source.lockRange(offset, length);
    try {
      return await copy();
    } finally {
      release();
    }
  }

  /**
   * One dirty chunk from source to target in write-blocking mode: as in the first pass, guest
   * writes to the range wait for this copy, so an older copy never lands on the target after a
   * newer write-through.
   */
  async #copyDirtyStep(): Promise<void> {
    let copied = 0;
    const io = { read: (o: number, b: Uint8Array) => this.source.read(o, b), target: this.target };
    await this.guarded(async () => {
      const peek = this.#bitmap.nextDirty(this.#cursor, this.#chunk) ?? (this.#cursor > 0 ? this.#bitmap.nextDirty(0, this.#chunk) : null);
      if (!peek) return;
      copied = await this.#excludingWriteThrough(peek.offset, peek.length, () => copyDirtyWithin(this.#bitmap, io, peek));
      this.#cursor = peek.offset + peek.length;
    });
    if (copied > 0) {
      this.addTotal(copied);
      await this.throttle(copied);
    }
  }

  async #flushTarget(): Promise<void> {
    await this.guarded(async () => {
      try {
        await this.target.flush();
      } catch (e) {
        throw new CopyError('write', e);
      }
    });
  }

  /** write-blocking: the guest's write is copied to the target before it completes. */
  async #writeThrough(e: WriteEvent): Promise<void> {
    // Only once the first pass has covered the range would a write-through be
    // enough on its own; the bitmap stays the source of truth either way, so a
    // failure here just leaves the range dirty for the background copy.
    try {
      if (e.kind === 'write' && e.data) await this.target.write(e.offset, e.data);
      else if (e.kind === 'zero') await this.target.writeZeroes(e.offset, e.length);
      else return;
      if (e.offset % this.granularity === 0 && (e.length % this.granularity === 0 || e.offset + e.length === this.source.length)) {
        this.#bitmap.clear(e.offset, e.length);
      }
    } catch {
      this.#bitmap.set(e.offset, e.length);
    }
  }

  protected override async commitChanges(): Promise<void> {
    const { source, target } = this;
    const pivot = !this.cancelRequested;
    const release = await source.quiesce();
    try {
      const read = (o: number, b: Uint8Array): Promise<void> => source.driver.read(o, b);
      await copyAllDirty(this.#bitmap, { read, target }, { chunk: this.#chunk, inFlight: IN_FLIGHT });
      await target.flush();
      for (const d of this.#detach) d();
      this.#detach = [];
      if (pivot && this.#options.pivot) source.forwardTo(target);
    } finally {
      release();
    }
    if (pivot && this.#options.pivot) {
      // The forward stays: a request held by the quiesce may resume only after
      // the pivot, and must reach the target. The source is out of use now.
      try {
        await this.#options.pivot(source, target);
      } catch (e) {
        source.forwardTo(null);
        throw e;
      }
    }
  }

  protected override async cleanup(): Promise<void> {
    for (const d of this.#detach) d();
    this.#detach = [];
  }
}
