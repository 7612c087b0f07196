import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockNode } from '../../../src/block/node.js';
import type { ImageNode } from '../../../src/block/types.js';
import { MirrorJob, defaultGranularity } from '../../../src/jobs/mirror.js';
import { StreamJob } from '../../../src/jobs/stream.js';
import { FakeDriver } from '../block/fake-driver.js';
import { eventsOf, GuestWriter, makeChain, nextEvent, readAll } from './job-fixtures.js';

const MiB = 1024 * 1024;

async function emptyTarget(length: number): Promise<BlockNode> {
  return BlockNode.attach(new FakeDriver({ filename: 'target.qcow2', length, cluster: 512 }));
}

for (const copyMode of ['background', 'write-blocking'] as const) {
  test(`mirror sync=full (${copyMode}) converges under guest writes and switches the guest to the target on complete`, async () => {
    const chain = await makeChain(4 * MiB, 2, (i, d) => d.set(i * MiB, 2 * MiB, 'data', 0x50 + i));
    const source = chain.top;
    const target = await emptyTarget(4 * MiB);
    const model = await readAll(source);
    let active: ImageNode = source;
    const job = new MirrorJob({ id: 'm1', source, target, sync: 'full', copyMode, targetIsZero: true, pivot: async (_f, to) => void (active = to) });
    const ready = nextEvent(job, 'BLOCK_JOB_READY');
    job.start();
    const writer = new GuestWriter(() => active, model, { offset: 0, length: 4 * MiB, seed: 7 });
    await ready;
    await new Promise((r) => setTimeout(r, 30));
    job.complete();
    await job.wait();
    await writer.stop();
    assert.equal(active, target);
    assert.ok(writer.writes > 0);
    assert.deepEqual(await readAll(target), model);
  });
}

test('mirror cancelled after ready finishes without pivot and leaves the target equal to the source', async () => {
  const chain = await makeChain(2 * MiB, 1, (_i, d) => d.set(0, MiB, 'data', 0x61));
  const target = await emptyTarget(2 * MiB);
  const job = new MirrorJob({ id: 'm2', source: chain.top, target, sync: 'full', pivot: async () => assert.fail('no pivot') });
  const events = eventsOf(job);
  const ready = nextEvent(job, 'BLOCK_JOB_READY');
  job.start();
  await ready;
  await chain.top.write(4096, new Uint8Array(4096).fill(9));
  job.cancel();
  await job.wait();
  assert.ok(events.includes('BLOCK_JOB_COMPLETED') && !events.includes('BLOCK_JOB_CANCELLED'));
  assert.deepEqual(await readAll(target), await readAll(chain.top));
});

test('mirror sync=top copies only the top image; sync=none only new writes', async () => {
  const chain = await makeChain(MiB, 2, (i, d) => d.set(i * 256 * 1024, 256 * 1024, 'data', 0x70 + i));
  const top = chain.top;
  const t1 = await emptyTarget(MiB);
  const j1 = new MirrorJob({ id: 'm3', source: top, target: t1, sync: 'top' });
  const r1 = nextEvent(j1, 'BLOCK_JOB_READY');
  j1.start();
  await r1;
  j1.cancel();
  await j1.wait();
  const got = await readAll(t1);
  assert.equal(got[0], 0, 'the backing layer is not copied');
  assert.equal(got[256 * 1024], 0x71);

  const t2 = await emptyTarget(MiB);
  const j2 = new MirrorJob({ id: 'm4', source: top, target: t2, sync: 'none' });
  const r2 = nextEvent(j2, 'BLOCK_JOB_READY');
  j2.start();
  await r2;
  await top.write(0, new Uint8Array(512).fill(5));
  j2.cancel();
  await j2.wait();
  const got2 = await readAll(t2);
  assert.equal(got2[0], 5);
  assert.equal(got2[256 * 1024], 0);
});

test('mirror granularity defaults follow the cluster size as in QEMU', () => {
  assert.equal(defaultGranularity(undefined), 65536);
  assert.equal(defaultGranularity(512), 4096);
  assert.equal(defaultGranularity(65536), 65536);
  assert.equal(defaultGranularity(2 * MiB), 65536);
});

test('stream copies the backing chain into the top under guest writes and drops the backing', async () => {
  const chain = await makeChain(2 * MiB, 3, (i, d) => d.set(i * 512 * 1024, 768 * 1024, 'data', 0x80 + i));
  const [base, , top] = chain.nodes;
  assert.ok(base && top);
  const model = await readAll(top);
  const job = new StreamJob({ id: 's1', top, base, chunkSize: 64 * 1024 });
  job.start();
  const writer = new GuestWriter(() => top, model, { offset: 0, length: 2 * MiB, seed: 3 });
  await job.wait();
  await writer.stop();
  assert.equal(top.backing, base);
  assert.deepEqual(chain.drivers[2]?.refs, [{ filename: 'layer0.qcow2', format: 'qcow2' }]);
  assert.equal(chain.drivers[1]?.closed, true);
  assert.deepEqual(await readAll(top), model);
  // Everything the middle image defined now lives in the top.
  const st = await top.layerStatus(512 * 1024, 768 * 1024);
  assert.ok(st.every((e) => e.allocated));
});
