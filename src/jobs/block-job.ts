/**
 * What the copying jobs (commit, stream, mirror) share on top of `Job`: the
 * on-error policies of QMP (BlockdevOnError) applied to one copy step, and
 * the bookkeeping of a node claimed by a job.
 */
import { isVdiskError } from '../errors.js';
import { CopyError } from './copy.js';
import { Job, type JobOptions } from './job.js';

/** QMP's BlockdevOnError. `auto` behaves as `report` for jobs. */
export type OnError = 'report' | 'ignore' | 'enospc' | 'stop' | 'auto';

export const ON_ERROR_VALUES: readonly OnError[] = ['report', 'ignore', 'enospc', 'stop', 'auto'];

export interface BlockJobOptions extends JobOptions {
  readonly onSourceError?: OnError;
  readonly onTargetError?: OnError;
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

  constructor(options: BlockJobOptions) {
    super(options);
    this.onSourceError = options.onSourceError ?? 'report';
    this.onTargetError = options.onTargetError ?? 'report';
  }

  get ioStatus(): 'ok' | 'failed' | 'nospace' {
    return this.#ioStatus;
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
