/**
 * What the copying jobs (commit, stream, mirror) share on top of `Job`: the
 * on-error policies of QMP (BlockdevOnError) applied to one copy step, and
 * the bookkeeping of a node claimed by a job.
 */
import type { DirtyBitmap } from '../block/dirty-bitmap.js';
import { isVdiskError } from '../errors.js';
import { CopyError, CopyPool, HOST_COPY_STEP, type NodeCopier } from './copy.js';
import { Job, type JobOptions } from './job.js';

/** QMP's BlockdevOnError. `auto` behaves as `report` for jobs. */
export type OnError = 'report' | 'ignore' | 'enospc' | 'stop' | 'auto';

export const ON_ERROR_VALUES: readonly OnError[] = ['report', 'ignore', 'enospc', 'stop', 'auto'];

export interface BlockJobOptions extends JobOptions {
  readonly onSourceError?: OnError;
  readonly onTargetError?: OnError;
}

/** How a job drains its dirty bitmap: see BlockCopyJob.copyDirty. */
export interface DirtyDrain {
  readonly bitmap: DirtyBitmap;
  readonly copier: NodeCopier;
  /** Bytes per copy step at most. */
  readonly chunk: number;
  /** Copy steps in flight at most. */
  readonly inFlight: number;
  /** Checked between steps: true ends the drain early (complete or cancel asked for). */
  readonly stop: () => boolean;
}

/** The action a policy takes for one failure. */
export function errorAction(policy: OnError, error: unknown): 'report' | 'ignore' | 'stop' {
  switch (policy) {
    case 'ignore':
      return 'ignore';
    case 'stop':
      return 'stop';
    case 'enospc':
      return isVdiskError(error, 'ENOSPC') || (error instanceof Error && isVdiskError(error.cause, 'ENOSPC')) ? 'stop' : 'report';
    case 'report':
    case 'auto':
      return 'report';
  }
}

export abstract class BlockCopyJob extends Job {
  readonly onSourceError: OnError;
  readonly onTargetError: OnError;
  /** QMP's io-status of the job: `failed` / `nospace` after an error, until the job moves on. */
  #ioStatus: 'ok' | 'failed' | 'nospace' = 'ok';
  /** Where copyDirty resumes: after the last range it started. */
  #dirtyCursor = 0;

  constructor(options: BlockJobOptions) {
    super(options);
    this.onSourceError = options.onSourceError ?? 'report';
    this.onTargetError = options.onTargetError ?? 'report';
  }

  get ioStatus(): 'ok' | 'failed' | 'nospace' {
    return this.#ioStatus;
  }

  /**
   * Copies dirty ranges (from where the last call stopped, wrapping) until the
   * bitmap is clean with no copy in flight, or `stop` says so; false when
   * nothing was dirty. Up to `inFlight` chunks go at once: one at a time, a
   * guest writing 4 KiB at random kept a job copying single 64 KiB granules,
   * each waiting for the last, and READY came 4x later than QEMU's. Dirty
   * data is work found on the way, so the total grows with it as QEMU's does.
   */
  protected async copyDirty(drain: DirtyDrain): Promise<boolean> {
    const { bitmap, chunk, copier } = drain;
    if (bitmap.count === 0) return false;
    const pool = new CopyPool(drain.inFlight, chunk);
    try {
      while (!drain.stop()) {
        await this.pausePoint();
        const range = bitmap.nextDirty(this.#dirtyCursor, chunk) ?? (this.#dirtyCursor > 0 ? bitmap.nextDirty(0, chunk) : null);
        if (!range) {
          if (pool.size === 0) break;
          // A failed copy marks its range dirty again: look once more after the last one.
          await pool.drain();
          continue;
        }
        this.#dirtyCursor = range.offset + range.length;
        // add waits for copies in flight over the same range (a guest write dirtied it again).
        await pool.add(async (buf) => {
          // Cleared as the copy starts: a guest write from now on marks it again.
          bitmap.clear(range.offset, range.length);
          const ok = await this.guarded(() => copier.copy(range.offset, range.length, buf));
          if (!ok) bitmap.set(range.offset, range.length);
        }, range);
        this.addTotal(range.length);
        await this.throttle(range.length);
      }
    } finally {
      await pool.drain();
    }
    return true;
  }

  /** Bytes of one first-pass step: HOST_COPY_STEP while the kernel copies and no speed limit is set, else `chunk`. */
  protected firstPassStep(copier: NodeCopier, chunk: number): number {
    return this.speed === 0 && copier.viaHost ? Math.max(chunk, HOST_COPY_STEP) : chunk;
  }

  /**
   * Runs one copy step. On failure the policy of the failing side decides:
   * `report` rethrows (the job fails), `ignore` returns false (the caller
   * retries the range later), `stop` pauses the job and returns false once it
   * is resumed. Every failure emits BLOCK_JOB_ERROR.
   */
  protected async guarded(step: () => Promise<void>): Promise<boolean> {
    try {
      await step();
      this.#ioStatus = 'ok';
      return true;
    } catch (e) {
      if (!(e instanceof CopyError)) throw e;
      const policy = e.operation === 'read' ? this.onSourceError : this.onTargetError;
      const action = errorAction(policy, e.cause);
      this.#ioStatus = isVdiskError(e.cause, 'ENOSPC') ? 'nospace' : 'failed';
      this.emitError(e.operation, action);
      if (action === 'report') throw e.cause instanceof Error ? e.cause : e;
      if (action === 'stop') {
        this.pauseForError();
        await this.pausePoint();
      }
      return false;
    }
  }
}
