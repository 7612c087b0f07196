import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Job, type JobEvent, type JobType } from '../../../src/jobs/job.js';
import { isVdiskError } from '../../../src/errors.js';

/** Copies `chunks` chunks; optionally waits for completion after marking ready. */
class CopyJob extends Job {
  override readonly type: JobType;
  readonly log: string[] = [];
  chunksDone = 0;
  constructor(
    id: string,
    private readonly chunks: number,
    private readonly options: { needsComplete?: boolean; failAt?: number; autoFinalize?: boolean; autoDismiss?: boolean; soft?: boolean } = {},
  ) {
    super({ id, autoFinalize: options.autoFinalize ?? true, autoDismiss: options.autoDismiss ?? true });
    this.type = options.needsComplete ? 'mirror' : 'stream';
  }
  protected override get softCancelSupported(): boolean {
    return this.options.soft ?? false;
  }
  protected override async body(): Promise<void> {
    this.setTotal(this.chunks * 10);
    for (let i = 0; i < this.chunks; i++) {
      if (this.options.failAt === i) throw new Error('Input/output error');
      await new Promise((r) => setImmediate(r));
      this.chunksDone++;
      await this.throttle(10);
    }
    if (this.options.needsComplete) {
      this.markReady();
      while (!this.completeRequested && !this.cancelRequested) {
        await this.pausePoint();
        await this.idle(5);
      }
      await this.pausePoint();
    }
  }
  protected override async commitChanges(): Promise<void> {
    this.log.push(this.cancelRequested ? 'commit-without-pivot' : 'commit');
  }
  protected override async abortChanges(): Promise<void> {
    this.log.push('abort');
  }
  protected override async cleanup(): Promise<void> {
    this.log.push('clean');
  }
}

function record(job: Job): string[] {
  const out: string[] = [];
  job.onEvent((e: JobEvent) => out.push(e.event === 'JOB_STATUS_CHANGE' ? e.data.status : e.event));
  return out;
}

test('a job that succeeds goes running → waiting → pending → concluded → null with events in QEMU order', async () => {
  const job = new CopyJob('j1', 5);
  const events = record(job);
  job.start();
  await job.wait();
  assert.deepEqual(events, ['created', 'running', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
  assert.deepEqual(job.log, ['commit', 'clean']);
  assert.equal(job.offset, 50);
  assert.equal(job.len, 50);
});

test('a failing job aborts, reports its error and leaves through concluded', async () => {
  const job = new CopyJob('j2', 5, { failAt: 2, autoDismiss: false });
  const events: JobEvent[] = [];
  job.onEvent((e) => events.push(e));
  job.start();
  await job.wait();
  assert.equal(job.status, 'concluded');
  assert.equal(job.error, 'Input/output error');
  assert.deepEqual(job.log, ['abort', 'clean']);
  const completed = events.find((e) => e.event === 'BLOCK_JOB_COMPLETED');
  assert.ok(completed && 'error' in completed.data && completed.data.error === 'Input/output error');
  assert.equal(job.info().error, 'Input/output error');
  job.dismiss();
  assert.equal(job.status, 'null');
});

test('cancel while running stops at the next pause point and emits BLOCK_JOB_CANCELLED', async () => {
  const job = new CopyJob('j3', 1000);
  const events = record(job);
  job.start();
  await new Promise((r) => setTimeout(r, 5));
  job.cancel();
  await job.wait();
  assert.ok(job.chunksDone < 1000);
  assert.deepEqual(events.slice(-4), ['aborting', 'BLOCK_JOB_CANCELLED', 'concluded', 'null']);
  assert.deepEqual(job.log, ['abort', 'clean']);
});

test('pause holds the job at a pause point until resume', async () => {
  const job = new CopyJob('j4', 200);
  const events = record(job);
  job.start();
  job.pause();
  assert.throws(() => job.pause(), /already paused/);
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(job.status, 'paused');
  const before = job.chunksDone;
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(job.chunksDone, before);
  job.resume();
  await job.wait();
  assert.equal(job.chunksDone, 200);
  assert.ok(events.includes('paused'));
});

test('a job that needs completion waits in ready; complete finishes it; pause in ready is standby', async () => {
  const job = new CopyJob('j5', 3, { needsComplete: true });
  const events = record(job);
  job.start();
  while (job.status !== 'ready') await new Promise((r) => setTimeout(r, 2));
  assert.throws(() => job.finalize(), (e: unknown) => isVdiskError(e, 'EINVAL') && /in state 'ready' cannot accept command verb 'finalize'/.test(e.message));
  job.pause();
  while ((job.status as string) !== 'standby') await new Promise((r) => setTimeout(r, 2));
  job.resume();
  job.complete();
  await job.wait();
  assert.deepEqual(job.log, ['commit', 'clean']);
  assert.deepEqual(events.slice(0, 4), ['created', 'running', 'ready', 'BLOCK_JOB_READY']);
  assert.ok(events.includes('standby'));
});

test('complete is refused while running', () => {
  const job = new CopyJob('j6', 1000, { needsComplete: true });
  job.start();
  assert.throws(() => job.complete(), /in state 'running' cannot accept command verb 'complete'/);
  job.cancel();
  return job.wait();
});

test('soft cancel after ready finishes without pivot and reports COMPLETED (mirror semantics)', async () => {
  const job = new CopyJob('j7', 2, { needsComplete: true, soft: true });
  const events = record(job);
  job.start();
  while (job.status !== 'ready') await new Promise((r) => setTimeout(r, 2));
  job.cancel(false);
  await job.wait();
  assert.deepEqual(job.log, ['commit-without-pivot', 'clean']);
  assert.ok(events.includes('BLOCK_JOB_COMPLETED'));
  assert.ok(!events.includes('BLOCK_JOB_CANCELLED'));
});

test('without auto-finalize the job announces BLOCK_JOB_PENDING, waits in pending for finalize, and stays concluded without auto-dismiss', async () => {
  const job = new CopyJob('j8', 2, { autoFinalize: false, autoDismiss: false });
  const events = record(job);
  job.start();
  while (job.status !== 'pending') await new Promise((r) => setTimeout(r, 2));
  assert.deepEqual(events.slice(-2), ['pending', 'BLOCK_JOB_PENDING']);
  assert.deepEqual(job.log, []);
  job.finalize();
  await job.wait();
  assert.equal(job.status, 'concluded');
  assert.deepEqual(job.log, ['commit', 'clean']);
  job.dismiss();
  assert.equal(job.status, 'null');
});

test('cancel before start concludes without running the body', async () => {
  const job = new CopyJob('j9', 2, { autoDismiss: false });
  job.cancel();
  await job.wait();
  assert.equal(job.chunksDone, 0);
  assert.equal(job.status, 'concluded');
});

test('set-speed rejects negative values and applies to a running job', async () => {
  const job = new CopyJob('j10', 5);
  assert.throws(() => job.setSpeed(-1), /non-negative/);
  job.setSpeed(1_000_000);
  assert.equal(job.speed, 1_000_000);
  job.start();
  await job.wait();
});
