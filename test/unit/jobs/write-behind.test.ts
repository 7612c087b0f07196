import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockNode } from '../../../src/block/node.js';
import { CommitJob } from '../../../src/jobs/commit.js';
import { WriteBehind } from '../../../src/jobs/copy.js';
import { MirrorJob } from '../../../src/jobs/mirror.js';
import { FakeDriver } from '../block/fake-driver.js';
import { nextEvent, readAll } from './job-fixtures.js';

const MiB = 1024 * 1024;

/** A target whose flushes wait until released, counting them. */
class GatedFlush {
  flushes = 0;
  #release: Array<() => void> = [];
  fail = false;
  async flush(): Promise<void> {
    this.flushes++;
    await new Promise<void>((resolve) => this.#release.push(resolve));
    if (this.fail) throw new Error('EIO on flush');
  }
  releaseAll(): void {
    for (const r of this.#release.splice(0)) r();
  }
}

test('WriteBehind asks for a flush every `every` bytes, never while one is in flight, and settle waits for it', async () => {
  const target = new GatedFlush();
  const behind = new WriteBehind(target, 4 * MiB);
  assert.equal(behind.due(3 * MiB), false);
  assert.equal(behind.due(MiB), true);
  behind.start();
  assert.equal(target.flushes, 1);
  assert.equal(behind.due(8 * MiB), false, 'no second flush while the first is in flight');
  let settled = false;
  const settling = behind.settle().then(() => (settled = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(settled, false, 'settle waits for the flush in flight');
  target.releaseAll();
  await settling;
  assert.equal(behind.due(0), true, 'bytes copied during the flush count towards the next one');
  behind.start();
  target.releaseAll();
  await behind.settle();
  assert.equal(behind.due(3 * MiB), false, 'the count restarts when a flush starts');
});

test('a background flush that fails is left to the next flush to report', async () => {
  const target = new GatedFlush();
  target.fail = true;
  const behind = new WriteBehind(target, MiB);
  assert.equal(behind.due(MiB), true);
  behind.start();
  target.releaseAll();
  await behind.settle();
  assert.equal(behind.due(MiB), true, 'a new flush may start after the failed one');
});

/** Fake images of `length` bytes with 1 MiB clusters (few enough to hold a long copy in memory). */
async function bigNode(name: string, length: number, fill?: number): Promise<{ node: BlockNode; driver: FakeDriver }> {
  const driver = new FakeDriver({ filename: name, length, cluster: MiB });
  if (fill !== undefined) for (let off = 0; off < length; off += MiB) driver.set(off, MiB, 'data', (fill + off / MiB) & 0xff);
  return { node: await BlockNode.attach(driver), driver };
}

/** Where the flushes fell among the writes of a driver's log: the index of each among the writes. */
function flushPositions(log: readonly string[]): number[] {
  const at: number[] = [];
  let writes = 0;
  for (const entry of log) {
    if (entry.startsWith('write')) writes++;
    else if (entry === 'flush') at.push(writes);
  }
  return at;
}

test('the first pass of a mirror flushes the target in the background as it goes, and the copy stays exact', async () => {
  const length = 160 * MiB;
  const source = await bigNode('source.qcow2', length, 1);
  const target = await bigNode('target.qcow2', length);
  const job = new MirrorJob({ id: 'wb1', source: source.node, target: target.node, sync: 'full' });
  const ready = nextEvent(job, 'BLOCK_JOB_READY');
  job.start();
  await ready;
  job.cancel();
  await job.wait();
  const writes = target.driver.log.filter((e) => e.startsWith('write')).length;
  const during = flushPositions(target.driver.log).filter((n) => n > 0 && n < writes);
  assert.ok(during.length >= 2, `flushes during the copy: ${during.join(', ')} of ${writes} writes`);
  assert.deepEqual(await readAll(target.node), await readAll(source.node));
});

test('an offline commit flushes the base in the background as it goes, and the base ends equal to the top', async () => {
  const length = 160 * MiB;
  const base = await bigNode('base.qcow2', length, 0x40);
  const topDriver = new FakeDriver({ filename: 'top.qcow2', length, cluster: MiB });
  for (let off = 0; off < length; off += 2 * MiB) topDriver.set(off, MiB, 'data', 0x80);
  const top = await BlockNode.attach(topDriver, { backing: base.node });
  const want = await readAll(top);
  const job = new CommitJob({ id: 'wb2', top, active: false });
  job.start();
  await job.wait();
  const writes = base.driver.log.filter((e) => e.startsWith('write')).length;
  const during = flushPositions(base.driver.log).filter((n) => n > 0 && n < writes);
  assert.ok(during.length >= 1, `flushes during the copy: ${during.join(', ')} of ${writes} writes`);
  assert.deepEqual(await readAll(base.node), want);
});
