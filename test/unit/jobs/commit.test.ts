import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ImageNode } from '../../../src/block/types.js';
import { CommitJob } from '../../../src/jobs/commit.js';
import { isVdiskError } from '../../../src/errors.js';
import { eventsOf, GuestWriter, makeChain, nextEvent, readAll } from './job-fixtures.js';

const MiB = 1024 * 1024;

function twoLayers(): ReturnType<typeof makeChain> {
  return makeChain(4 * MiB, 2, (i, d) => {
    if (i === 0) d.set(0, 2 * MiB, 'data', 0x11);
    else d.set(MiB, 2 * MiB, 'data', 0x22).set(3 * MiB + 4096, 4096, 'zero');
  });
}

test('active commit copies the top into the base while the guest writes, then pivots on complete', async () => {
  const chain = await twoLayers();
  const [base, top] = chain.nodes;
  assert.ok(base && top);
  const model = await readAll(top);
  let active: ImageNode = top;
  const pivots: string[] = [];
  const job = new CommitJob({
    id: 'c1',
    top,
    active: true,
    chunkSize: 64 * 1024,
    pivot: async (from, to) => {
      pivots.push(`${from.filename}->${to.filename}`);
      active = to;
    },
  });
  const events = eventsOf(job);
  const writers = [
    new GuestWriter(() => active, model, { offset: 0, length: 2 * MiB, seed: 1 }),
    new GuestWriter(() => active, model, { offset: 2 * MiB, length: 2 * MiB, seed: 2 }),
  ];
  const ready = nextEvent(job, 'BLOCK_JOB_READY');
  job.start();
  await ready;
  await new Promise((r) => setTimeout(r, 30));
  job.complete();
  await job.wait();
  for (const w of writers) await w.stop();
  assert.deepEqual(pivots, ['layer1.qcow2->layer0.qcow2']);
  assert.ok(writers.every((w) => w.writes > 0));
  assert.deepEqual(await readAll(base), model);
  assert.equal(chain.drivers[1]?.closed, true, 'the old top is closed');
  assert.deepEqual(events, ['created', 'running', 'ready', 'BLOCK_JOB_READY', 'waiting', 'pending', 'BLOCK_JOB_COMPLETED', 'concluded', 'null']);
  assert.ok(events.includes('BLOCK_JOB_READY') && events.includes('BLOCK_JOB_COMPLETED') && !events.includes('BLOCK_JOB_CANCELLED'));
});

test('cancelling an active commit when ready leaves the top active and the base consistent underneath it', async () => {
  const chain = await twoLayers();
  const [base, top] = chain.nodes;
  assert.ok(base && top);
  const before = await readAll(top);
  const baseBefore = await readAll(base);
  const job = new CommitJob({ id: 'c2', top, active: true, pivot: async () => assert.fail('must not pivot') });
  const events = eventsOf(job);
  const ready = nextEvent(job, 'BLOCK_JOB_READY');
  job.start();
  await ready;
  job.cancel();
  await job.wait();
  assert.ok(events.includes('BLOCK_JOB_CANCELLED'));
  assert.deepEqual(await readAll(top), before, 'the guest still sees the same disk');
  // What the base gained is only where the top defines data.
  const after = await readAll(base);
  for (let i = 0; i < after.length; i += 4096) {
    if (after[i] !== baseBefore[i]) assert.equal(after[i], before[i]);
  }
  assert.equal(chain.drivers[1]?.closed, false);
});

test('cancel during the copy stops within one chunk', async () => {
  const chain = await makeChain(64 * MiB, 2, (i, d) => {
    if (i === 1) d.set(0, 64 * MiB, 'data', 0x33);
  });
  const job = new CommitJob({ id: 'c3', top: chain.top, active: true, chunkSize: MiB, speed: 4 * MiB });
  job.start();
  await new Promise((r) => setTimeout(r, 50));
  job.cancel();
  await job.wait();
  assert.equal(job.status, 'null');
  assert.ok(job.offset < 16 * MiB, `stopped early (offset ${job.offset})`);
});

test('intermediate commit copies the middle image into the base and points the overlay at the base', async () => {
  const chain = await makeChain(2 * MiB, 3, (i, d) => {
    d.set(i * 512 * 1024, 512 * 1024, 'data', 0x40 + i);
  });
  const [base, mid, top] = chain.nodes;
  assert.ok(base && mid && top);
  const model = await readAll(top);
  const job = new CommitJob({ id: 'c4', top: mid, base, active: false, overlay: top, backingFile: 'layer0.qcow2' });
  const events = eventsOf(job);
  job.start();
  await job.wait();
  assert.ok(!events.includes('BLOCK_JOB_READY'));
  assert.equal(top.backing, base);
  assert.deepEqual(chain.drivers[2]?.refs, [{ filename: 'layer0.qcow2', format: 'qcow2' }]);
  assert.deepEqual(await readAll(top), model);
  assert.equal(chain.drivers[1]?.closed, true);
});

test('commit of an image with no backing file is refused with a clear error', async () => {
  const chain = await makeChain(MiB, 1, () => undefined);
  assert.throws(
    () => new CommitJob({ id: 'c5', top: chain.top, active: true }),
    (e) => isVdiskError(e, 'EINVAL') && /no backing file/.test(e.message),
  );
});

test('a write error on the base fails the job with the error and leaves the top active', async () => {
  const chain = await twoLayers();
  const [base, top] = chain.nodes;
  assert.ok(base && top);
  const d0 = chain.drivers[0];
  assert.ok(d0);
  d0.write = async () => {
    throw Object.assign(new Error('No space left on device'), { code: 'ENOSPC' });
  };
  const job = new CommitJob({ id: 'c6', top, active: true, autoDismiss: false });
  const seen: unknown[] = [];
  job.onEvent((e) => {
    if (e.event === 'BLOCK_JOB_ERROR' || e.event === 'BLOCK_JOB_COMPLETED') seen.push(e);
  });
  job.start();
  await job.wait();
  assert.equal(job.status, 'concluded');
  assert.match(job.info().error ?? '', /No space left/);
  assert.deepEqual(seen[0], { event: 'BLOCK_JOB_ERROR', data: { device: 'c6', operation: 'write', action: 'report' } });
  assert.match(JSON.stringify(seen[seen.length - 1]), /"BLOCK_JOB_COMPLETED".*"error":"No space left on device"/);
  const buf = new Uint8Array(512);
  await top.read(MiB, buf);
  assert.equal(buf[0], 0x22);
});

test('a ready active commit copies what the guest dirtied several chunks at once', async () => {
  const chain = await twoLayers();
  const [base, top] = chain.nodes;
  const baseDriver = chain.drivers[0];
  assert.ok(base && top && baseDriver);
  let inFlight = 0;
  let most = 0;
  const write = baseDriver.write.bind(baseDriver);
  baseDriver.write = async (offset, data): Promise<void> => {
    inFlight++;
    most = Math.max(most, inFlight);
    try {
      await new Promise((r) => setTimeout(r, 2));
      await write(offset, data);
    } finally {
      inFlight--;
    }
  };
  const job = new CommitJob({ id: 'c-dirty', top, active: true, chunkSize: 64 * 1024, pivot: async () => undefined });
  const ready = nextEvent(job, 'BLOCK_JOB_READY');
  job.start();
  await ready;
  most = 0;
  const offsets = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => i * 256 * 1024);
  for (const [i, off] of offsets.entries()) await top.write(off, new Uint8Array(4096).fill(0x90 + i));
  // Before complete (whose final sync is concurrent anyway): the ready loop's own copies.
  const copied = async (): Promise<boolean> => {
    const got = await readAll(base);
    return offsets.every((off, i) => got[off] === 0x90 + i);
  };
  for (let tries = 0; !(await copied()); tries++) {
    assert.ok(tries < 200, 'the dirty ranges reach the base');
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.ok(most > 1, `copies in flight at once: ${most}`);
  const want = await readAll(top);
  job.complete();
  await job.wait();
  assert.deepEqual(await readAll(base), want);
});
