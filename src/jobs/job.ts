import { isVdiskError, VdiskError } from '../errors.js';
import { RateLimit } from './rate-limit.js';
import { canTransition, verbAllowed, type JobStatus, type JobVerb } from './status.js';

/**
 * QEMU reports a job that failed on I/O with strerror() of the errno alone
 * (job_update_rc), e.g. "No space left on device"; management tools match
 * these texts. Other failures keep their own message.
 */
const IO_ERROR_TEXT: Readonly<Partial<Record<string, string>>> = {
  EIO: 'Input/output error',
  ENOSPC: 'No space left on device',
};

function jobErrorText(e: unknown): string {
  const io = isVdiskError(e) ? IO_ERROR_TEXT[e.code] : undefined;
  if (io !== undefined) return io;
  return e instanceof Error ? e.message : String(e);
}

/** QMP's JobType. */
export type JobType = 'commit' | 'stream' | 'mirror' | 'backup' | 'create' | 'amend';

export interface BlockJobEventData {
  readonly type: JobType;
  readonly device: string;
  readonly len: number;
  readonly offset: number;
  readonly speed: number;
}

/** Events with QMP's names and payloads; the QMP layer only adds timestamps. */
export type JobEvent =
  | { readonly event: 'JOB_STATUS_CHANGE'; readonly data: { readonly id: string; readonly status: JobStatus } }
  | { readonly event: 'BLOCK_JOB_READY'; readonly data: BlockJobEventData }
  | { readonly event: 'BLOCK_JOB_COMPLETED'; readonly data: BlockJobEventData & { readonly error?: string } }
  | { readonly event: 'BLOCK_JOB_CANCELLED'; readonly data: BlockJobEventData }
  | { readonly event: 'BLOCK_JOB_PENDING'; readonly data: { readonly type: JobType; readonly id: string } }
  | {
      readonly event: 'BLOCK_JOB_ERROR';
      readonly data: { readonly device: string; readonly operation: 'read' | 'write'; readonly action: 'ignore' | 'report' | 'stop' };
    };

export type JobListener = (event: JobEvent) => void;

export interface JobOptions {
  readonly id: string;
  readonly speed?: number;
  /** Finalize (pivot, drop images) as soon as the job is pending; default true. */
  readonly autoFinalize?: boolean;
  /** Drop the job from the list once concluded; default true. */
  readonly autoDismiss?: boolean;
}

/** Thrown at a pause point when the job was cancelled hard; the body lets it propagate. */
export class JobCancelledError extends Error {
  override readonly name = 'JobCancelledError';
}

/** QMP's JobInfo (query-jobs). */
export interface JobInfo {
  readonly id: string;
  readonly type: JobType;
  readonly status: JobStatus;
  readonly 'current-progress': number;
  readonly 'total-progress': number;
  readonly error?: string;
}

/**
 * One long-running operation. A subclass implements `body()`: a loop of bounded
 * chunks that calls `pausePoint()` (or `throttle()`) between chunks, never holding
 * a lock across one. The base class owns the status, the verbs and the events.
 *
 * Life: created → running [→ ready ⇄ standby] → waiting → pending → concluded → null,
 * or → aborting → concluded on error or cancel. Paused ⇄ running at pause points.
 */
export abstract class Job {
  readonly id: string;
  abstract readonly type: JobType;
  readonly autoFinalize: boolean;
  readonly autoDismiss: boolean;

  #status: JobStatus = 'created';
  /** The pause being waited out, shared by every pause point reached meanwhile. */
  #pausing: Promise<void> | null = null;
  #done = 0;
  #total = 0;
  #error: string | undefined;
  #userPaused = false;
  #cancelled = false;
  #forceCancelled = false;
  #completeRequested = false;
  #busy = false;
  readonly #rate: RateLimit;
  readonly #listeners = new Set<JobListener>();
  /** Wakes a body waiting at a pause point or for a signal. */
  #wake: (() => void) | null = null;
  #finished: Promise<void> | null = null;
  #finalizeGate: { resolve: () => void; promise: Promise<void> } | null = null;
  #dismissed = false;

  constructor(options: JobOptions) {
    this.id = options.id;
    this.autoFinalize = options.autoFinalize ?? true;
    this.autoDismiss = options.autoDismiss ?? true;
    this.#rate = new RateLimit(options.speed ?? 0);
  }

  // ---- what subclasses implement -------------------------------------------------

  /** The work. Resolve when done; throw to fail. Poll `cancelRequested` / call `pausePoint()` between chunks. */
  protected abstract body(): Promise<void>;
  /** After success, when finalizing: switch the graph over (pivot, drop images). Throwing fails the job. */
  protected async commitChanges(): Promise<void> {}
  /** After failure or cancel: undo what must be undone so every image stays usable. */
  protected async abortChanges(): Promise<void> {}
  /** Always, last: release what the job holds (bitmaps, node claims). */
  protected async cleanup(): Promise<void> {}

  // ---- observers -----------------------------------------------------------------

  get status(): JobStatus {
    return this.#status;
  }
  get speed(): number {
    return this.#rate.speed;
  }
  get offset(): number {
    return this.#done;
  }
  get len(): number {
    return this.#total;
  }
  get error(): string | undefined {
    return this.#error;
  }
  /** True when paused, or about to pause at its next pause point (QMP's `paused`). */
  get paused(): boolean {
    return this.#userPaused;
  }
  get busy(): boolean {
    return this.#busy;
  }
  get ready(): boolean {
    return this.#status === 'ready' || this.#status === 'standby';
  }
  get dismissed(): boolean {
    return this.#dismissed;
  }

  onEvent(listener: JobListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  info(): JobInfo {
    return {
      id: this.id,
      type: this.type,
      status: this.#status,
      'current-progress': this.#done,
      'total-progress': this.#total,
      ...(this.#error !== undefined ? { error: this.#error } : {}),
    };
  }

  /** Resolves when the job has concluded (whatever the outcome). */
  async wait(): Promise<void> {
    if (this.#finished) await this.#finished;
    while (this.#status !== 'concluded' && this.#status !== 'null') {
      await new Promise<void>((resolve) => {
        const off = this.onEvent((e) => {
          if (e.event === 'JOB_STATUS_CHANGE' && (e.data.status === 'concluded' || e.data.status === 'null')) {
            off();
            resolve();
          }
        });
      });
    }
  }

  // ---- verbs ---------------------------------------------------------------------

  /** Starts the body in the background. */
  start(): void {
    if (this.#status !== 'created') throw this.#verbError('start' as JobVerb);
    // QEMU's job_create announces `created` (job.c: job_state_transition to CREATED);
    // listeners attach between construction and start, so it goes out here.
    this.#emit({ event: 'JOB_STATUS_CHANGE', data: { id: this.id, status: 'created' } });
    if (this.#cancelled) return;
    this.#transition('running');
    this.#finished = this.#run();
  }

  pause(): void {
    this.#apply('pause');
    if (this.#userPaused) throw new VdiskError('EINVAL', `Job '${this.id}' is already paused`);
    this.#userPaused = true;
  }

  resume(): void {
    this.#apply('resume');
    if (!this.#userPaused) throw new VdiskError('EINVAL', `Can't resume a job that was not paused`);
    this.#userPaused = false;
    this.#poke();
  }

  setSpeed(speed: number): void {
    this.#apply('set-speed');
    if (!Number.isSafeInteger(speed) || speed < 0) {
      throw new VdiskError('EINVAL', `Parameter 'speed' expects a non-negative value`, { field: 'speed' });
    }
    this.#rate.speed = speed;
    this.#poke();
  }

  /**
   * Cancel. A ready job cancelled without `force` may finish without switching
   * over (mirror: the target is a consistent copy); otherwise the job aborts.
   */
  cancel(force = false): void {
    this.#apply('cancel');
    this.#cancelled = true;
    this.#forceCancelled = force || !this.ready || !this.softCancelSupported;
    this.#userPaused = false;
    if (this.#status === 'created') {
      this.#finished = this.#conclude(new JobCancelledError('cancelled before start'));
      return;
    }
    if (this.#status === 'pending') {
      this.#finalizeGate?.resolve();
    }
    this.#poke();
  }

  complete(): void {
    this.#apply('complete');
    if (this.#cancelled) throw new VdiskError('EINVAL', `The active block job '${this.id}' cannot be completed`);
    this.#completeRequested = true;
    this.#poke();
  }

  finalize(): void {
    this.#apply('finalize');
    this.#finalizeGate?.resolve();
  }

  dismiss(): void {
    this.#apply('dismiss');
    this.#dismissed = true;
    this.#transition('null');
  }

  // ---- what the body uses --------------------------------------------------------

  /** Jobs whose cancel-after-ready finishes cleanly without switching over (mirror) say true. */
  protected get softCancelSupported(): boolean {
    return false;
  }
  /** Any cancel was asked for (hard, or soft after ready). */
  protected get cancelRequested(): boolean {
    return this.#cancelled;
  }
  /** A hard cancel: stop now. */
  protected get cancelledHard(): boolean {
    return this.#cancelled && this.#forceCancelled;
  }
  protected get completeRequested(): boolean {
    return this.#completeRequested;
  }

  protected setTotal(bytes: number): void {
    this.#total = bytes;
  }
  protected addTotal(bytes: number): void {
    this.#total += bytes;
  }
  protected advance(bytes: number): void {
    this.#done += bytes;
  }

  /** running → ready, with BLOCK_JOB_READY. */
  protected markReady(): void {
    if (this.#status !== 'running') return;
    this.#transition('ready');
    this.#emit({ event: 'BLOCK_JOB_READY', data: this.#blockData() });
  }

  /** Emits BLOCK_JOB_ERROR for a failed copy step, with the action the job takes. */
  protected emitError(operation: 'read' | 'write', action: 'ignore' | 'report' | 'stop'): void {
    this.#emit({ event: 'BLOCK_JOB_ERROR', data: { device: this.id, operation, action } });
  }

  /** Pauses the job as if the user had (on-error policy `stop`); it waits at its next pause point for a resume. */
  protected pauseForError(): void {
    this.#userPaused = true;
  }

  /**
   * Waits while paused; throws JobCancelledError after a hard cancel. Several copy steps in flight may
   * reach it at once (an error policy `stop` in each): they share one pause, one state change each way.
   */
  protected async pausePoint(): Promise<void> {
    for (;;) {
      if (this.cancelledHard) throw new JobCancelledError(`Job '${this.id}' was cancelled`);
      if (!this.#userPaused) return;
      if (this.#pausing) {
        await this.#pausing;
        continue;
      }
      this.#pausing = this.#holdPaused();
      try {
        await this.#pausing;
      } finally {
        this.#pausing = null;
      }
    }
  }

  async #holdPaused(): Promise<void> {
    const resumeTo = this.#status === 'ready' ? 'ready' : 'running';
    this.#transition(resumeTo === 'ready' ? 'standby' : 'paused');
    this.#busy = false;
    while (this.#userPaused && !this.#cancelled) await this.#sleepUntilPoked(1000);
    this.#busy = true;
    this.#transition(resumeTo);
  }

  /** Accounts `bytes` of work against the speed limit, waiting as needed; also a pause point. */
  protected async throttle(bytes: number): Promise<void> {
    this.advance(bytes);
    let delay = this.#rate.account(bytes, Date.now());
    while (delay > 0) {
      await this.pausePoint();
      await this.#sleepUntilPoked(Math.min(delay, RateLimit.SLICE_MS));
      delay = this.#rate.account(0, Date.now());
    }
    await this.pausePoint();
  }

  /** Sleeps up to `ms`, or until a verb (complete, cancel, resume, set-speed) wakes the job. */
  protected async idle(ms: number): Promise<void> {
    this.#busy = false;
    await this.#sleepUntilPoked(ms);
    this.#busy = true;
  }

  // ---- internals -----------------------------------------------------------------

  async #run(): Promise<void> {
    this.#busy = true;
    let failure: unknown = null;
    try {
      await this.body();
      if (this.cancelledHard) failure = new JobCancelledError('cancelled');
    } catch (e) {
      failure = e;
    }
    await this.#conclude(failure);
  }

  async #conclude(failure: unknown): Promise<void> {
    this.#busy = false;
    if (failure === null) {
      this.#transition('waiting');
      this.#transition('pending');
      if (!this.autoFinalize) {
        // QEMU (job.c job_transition_to_pending) announces BLOCK_JOB_PENDING only when the client must finalize.
        this.#emit({ event: 'BLOCK_JOB_PENDING', data: { type: this.type, id: this.id } });
        let resolve: () => void = () => {};
        const promise = new Promise<void>((r) => (resolve = r));
        this.#finalizeGate = { resolve, promise };
        await promise;
        this.#finalizeGate = null;
        if (this.#cancelled) failure = new JobCancelledError('cancelled while pending');
      }
      if (failure === null) {
        try {
          await this.commitChanges();
        } catch (e) {
          failure = e;
        }
      }
    }
    if (failure !== null) {
      const cancelled = failure instanceof JobCancelledError;
      if (!cancelled) this.#error = jobErrorText(failure);
      if (this.#status !== 'aborting') this.#transition('aborting');
      try {
        await this.abortChanges();
      } catch (e) {
        this.#error ??= jobErrorText(e);
      }
    }
    try {
      await this.cleanup();
    } catch (e) {
      this.#error ??= jobErrorText(e);
    }
    const data = this.#blockData();
    if (failure instanceof JobCancelledError && this.#error === undefined) {
      this.#emit({ event: 'BLOCK_JOB_CANCELLED', data });
    } else {
      this.#emit({ event: 'BLOCK_JOB_COMPLETED', data: this.#error !== undefined ? { ...data, error: this.#error } : data });
    }
    this.#transition('concluded');
    if (this.autoDismiss) {
      this.#dismissed = true;
      this.#transition('null');
    }
  }

  #blockData(): BlockJobEventData {
    return { type: this.type, device: this.id, len: this.#total, offset: this.#done, speed: this.#rate.speed };
  }

  #apply(verb: JobVerb): void {
    if (!verbAllowed(verb, this.#status)) throw this.#verbError(verb);
  }

  #verbError(verb: JobVerb): VdiskError {
    return new VdiskError('EINVAL', `Job '${this.id}' in state '${this.#status}' cannot accept command verb '${verb}'`);
  }

  #transition(to: JobStatus): void {
    if (!canTransition(this.#status, to)) {
      throw new VdiskError('EINVAL', `Job '${this.id}': invalid status change ${this.#status} -> ${to}`);
    }
    this.#status = to;
    this.#emit({ event: 'JOB_STATUS_CHANGE', data: { id: this.id, status: to } });
  }

  #emit(event: JobEvent): void {
    for (const l of [...this.#listeners]) l(event);
  }

  #poke(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  #sleepUntilPoked(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        if (self.#wake === done) self.#wake = null;
        resolve();
      }
      this.#wake = done;
    });
  }
}
