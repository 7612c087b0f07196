/**
 * Commit (backward merge): copy what the images from `top` down to (not
 * including) `base` define into `base`, then take those images out of the
 * chain.
 *
 * - Active commit (`top` is what the guest writes): a dirty bitmap follows the
 *   guest's writes to `top` from before the first pass; after the pass the
 *   job copies dirty ranges until none are left, flushes `base` and is ready.
 *   `complete` holds the guest's requests on `top`, copies the last dirty
 *   ranges, forwards `top` to `base` and asks the graph to switch every user
 *   over (`pivot`); then the old images are closed. Cancel before that leaves
 *   `top` active; `base` only gained data that `top` still shadows.
 * - Intermediate commit (`top` is below the active image): no guest writes
 *   reach `top`; after the copy the image above `top` (`overlay`) is made to
 *   point at `base`, in memory and in its header.
 * - Offline commit (`vdisk commit`): intermediate commit with no overlay; the
 *   CLI empties the top afterwards as qemu-img does.
 */
import { DirtyBitmap } from '../block/dirty-bitmap.js';
import type { BlockNode } from '../block/node.js';
import type { ImageNode } from '../block/types.js';
import { VdiskError } from '../errors.js';
import { BlockCopyJob, type BlockJobOptions } from './block-job.js';
import { COPY_CHUNK, CopyPool, copyAllDirty, NodeCopier, statusOf, trackWrites, WriteBehind, zeroRange } from './copy.js';
import type { JobType } from './job.js';

/** Switches every user of `from` over to `to` (the daemon's NodeGraph.replace). */
export type PivotFn = (from: ImageNode, to: ImageNode) => Promise<void>;

export interface CommitOptions extends BlockJobOptions {
  readonly top: BlockNode;
  /** The image that receives the data; default: the bottom of top's chain. */
  readonly base?: BlockNode;
  /** `top` is the active image: the job waits for `complete` and pivots. */
  readonly active: boolean;
  /** Active commit: switches the users of `top` to `base` on completion. */
  readonly pivot?: PivotFn;
  /** Intermediate commit: the image whose backing is `top`; its backing becomes `base`. */
  readonly overlay?: BlockNode | null;
  /** The backing name written into `overlay` (QMP backing-file); default: base's filename. */
  readonly backingFile?: string;
  /** Bytes per copy step; default 1 MiB. */
  readonly chunkSize?: number;
  /** Dirty bitmap granularity for active commit; default 64 KiB. */
  readonly granularity?: number;
}

/** Copy steps in flight, in the first pass and when copying dirty ranges. */
const IN_FLIGHT = 4;

/** Bytes copied between two background flushes of the base (see WriteBehind). */
const WRITE_BEHIND = 64 * 1024 * 1024;

/** How long a ready job sleeps when nothing is dirty before looking again (ms). */
const READY_POLL_MS = 20;

/** Checks that `base` lies strictly below `top`; the images between them, top first. */
export function imagesAbove(top: BlockNode, base: BlockNode): BlockNode[] {
  const above: BlockNode[] = [];
  for (let n: BlockNode | null = top; n; n = n.backing) {
    if (n === base) {
      if (above.length === 0) break;
      return above;
    }
    above.push(n);
  }
  throw new VdiskError('EINVAL', `'${base.filename}' is not in the backing chain below '${top.filename}'`, { file: top.filename });
}

export class CommitJob extends BlockCopyJob {
  override readonly type: JobType = 'commit';
  readonly top: BlockNode;
  readonly base: BlockNode;
  readonly active: boolean;
  readonly #options: CommitOptions;
  readonly #dropped: BlockNode[];
  readonly #chunk: number;
  readonly #copier: NodeCopier;
  #bitmap: DirtyBitmap | null = null;
  #detach: (() => void) | null = null;
  #baseWasReadOnly = false;

  constructor(options: CommitOptions) {
    super(options);
    const top = options.top;
    const bottom = top.chain()[top.chain().length - 1];
    const base = options.base ?? (bottom !== top ? bottom : undefined);
    if (!base || !top.backing) {
      throw new VdiskError('EINVAL', `Top image '${top.filename}' has no backing file to commit into`, { file: top.filename });
    }
    this.#dropped = imagesAbove(top, base);
    if (!options.active && options.overlay && options.overlay.backing !== top) {
      throw new VdiskError('EINVAL', `'${options.overlay.filename}' is not the overlay of '${top.filename}'`, { file: options.overlay.filename });
    }
    this.top = top;
    this.base = base;
    this.active = options.active;
    this.#options = options;
    this.#chunk = options.chunkSize ?? COPY_CHUNK;
    this.#copier = new NodeCopier(top, base);
  }

  protected override async body(): Promise<void> {
    const { top, base } = this;
    if (this.active) {
      // Before anything is copied, so no guest write is missed.
      this.#bitmap = new DirtyBitmap(top.length, this.#options.granularity ?? 64 * 1024);
      this.#detach = trackWrites(top, this.#bitmap);
    }
    if (base.readOnly) {
      this.#baseWasReadOnly = true;
      await base.reopen({ readOnly: false });
    }
    if (base.length < top.length) await base.resize(top.length);
    this.setTotal(top.length);
    await this.#firstPass();
    if (!this.active) {
      await base.flush();
      return;
    }
    await this.#copyDirty(() => false);
    await base.flush();
    this.markReady();
    const stop = (): boolean => this.completeRequested || this.cancelRequested;
    while (!stop()) {
      await this.pausePoint();
      if (!(await this.#copyDirty(stop))) await this.idle(READY_POLL_MS);
    }
    await this.pausePoint();
  }

  /**
   * Copies every range the images above base define, in bounded chunks with
   * up to IN_FLIGHT of them in flight; pause and cancel are checked between
   * chunks, and a cancel waits only for the chunks already in flight.
   */
  async #firstPass(): Promise<void> {
    const { top, base } = this;
    const pool = new CopyPool(IN_FLIGHT, this.#chunk);
    const behind = new WriteBehind(base, WRITE_BEHIND);
    try {
      for (let pos = 0; pos < top.length; ) {
        await this.pausePoint();
        const length = Math.min(this.#chunk * 64, top.length - pos);
        const extents = await statusOf(top, { offset: pos, length }, base);
        for (const e of extents) {
          for (let off = e.offset; off < e.offset + e.length; ) {
            const n = Math.min(this.firstPassStep(this.#copier, this.#chunk), e.offset + e.length - off);
            if (!e.present) {
              this.advance(n);
            } else {
              const at = off;
              await pool.add(async (buf) => {
                const ok = await this.guarded(() =>
                  e.zero ? zeroRange(base, at, n) : this.#copier.copy(at, n, buf),
                );
                if (!ok) this.#bitmap?.set(at, n);
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

  /** Active commit: copies what the guest dirtied, several chunks at once (BlockCopyJob.copyDirty). */
  async #copyDirty(stop: () => boolean): Promise<boolean> {
    const bitmap = this.#bitmap;
    if (!bitmap) return false;
    return this.copyDirty({ bitmap, copier: this.#copier, chunk: this.#chunk, inFlight: IN_FLIGHT, stop });
  }

  protected override async commitChanges(): Promise<void> {
    if (this.active) await this.#pivot();
    else if (this.#options.overlay) await this.#rewriteOverlay(this.#options.overlay);
    else return;
    for (const n of this.#dropped) await n.closeLayer();
  }

  /** Final sync with the guest's requests held, then base takes top's place. */
  async #pivot(): Promise<void> {
    const { top, base } = this;
    const pivot = this.#options.pivot;
    const release = await top.quiesce();
    try {
      const bitmap = this.#bitmap;
      // Under the quiesce the job reads top's own driver: the node's gate is closed.
      const read = (o: number, b: Uint8Array): Promise<void> => top.driver.read(o, b);
      if (bitmap) await copyAllDirty(bitmap, { read, target: base }, { chunk: this.#chunk, inFlight: IN_FLIGHT });
      await base.flush();
      this.#detach?.();
      this.#detach = null;
      top.forwardTo(base);
    } finally {
      release();
    }
    if (pivot) await pivot(top, base);
  }

  async #rewriteOverlay(overlay: BlockNode): Promise<void> {
    const reference = this.#options.backingFile;
    await overlay.changeBacking(this.base, { persist: true, ...(reference !== undefined ? { reference } : {}) });
  }

  protected override async abortChanges(): Promise<void> {
    // The base only gained data the images above still shadow: it stays valid.
    await this.base.flush().catch(() => undefined);
    if (this.#baseWasReadOnly) await this.base.reopen({ readOnly: true });
  }

  protected override async cleanup(): Promise<void> {
    this.#detach?.();
    this.#detach = null;
    this.#bitmap = null;
  }
}
