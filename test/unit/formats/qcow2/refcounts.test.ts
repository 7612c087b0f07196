/**
 * The refcount allocator's placement done in the caller's turn (allocRunNow):
 * it hands out exactly the run allocRun would, and declines, changing
 * nothing, whenever allocRun would have to wait or search.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FileGrowth } from '../../../../src/formats/file-growth.js';
import { parseHeaderCluster, readHeaderCluster } from '../../../../src/formats/qcow2/header.js';
import { Refcounts } from '../../../../src/formats/qcow2/refcounts.js';
import { freshImageBytes } from '../../../crash/image-helpers.js';
import { MemoryHostFile } from '../../../crash/memory-host.js';

const CLUSTER = 65536;

/** The allocator of the qcow2 image in `host`. */
async function refcountsOver(host: MemoryHostFile, growth: FileGrowth | null = null): Promise<Refcounts> {
  const { header } = parseHeaderCluster(await readHeaderCluster(host), { file: host.path, fileSize: await host.size() });
  return Refcounts.load({
    host,
    file: host.path,
    clusterBits: header.clusterBits,
    refcountOrder: header.refcountOrder,
    tableOffset: header.refcountTableOffset,
    tableClusters: header.refcountTableClusters,
    cacheCapacity: 4,
    growth,
  });
}

/** The allocator of a fresh 1 GiB image (64 KiB clusters, 16-bit refcounts: one block covers 2 GiB). */
async function freshRefcounts(growth: 'none' | 'reserving' = 'none'): Promise<{ r: Refcounts; host: MemoryHostFile; growth: FileGrowth | null }> {
  const host = new MemoryHostFile('refcounts.qcow2', await freshImageBytes(1024 ** 3, {}));
  const g = growth === 'reserving' ? new FileGrowth(host, await host.size(), CLUSTER, 8 * CLUSTER) : null;
  return { r: await refcountsOver(host, g), host, growth: g };
}

test('allocRunNow hands out the same runs as allocRun, each counted once', async () => {
  const { r: now } = await freshRefcounts();
  const { r: later } = await freshRefcounts();
  // The first call loads the block (allocRun); after it, the block is cached.
  const got: number[] = [];
  const want: number[] = [];
  for (const count of [1, 3, 1, 2, 5, 1]) {
    const a = now.allocRunNow(count) ?? (await now.allocRun(count));
    got.push(a.offset);
    want.push((await later.allocRun(count)).offset);
  }
  assert.deepEqual(got, want);
  assert.ok(now.allocRunNow(1) !== null, 'with the block cached and nothing in progress, the placement is immediate');
  for (let c = got[0] ?? 0; c < (got.at(-1) ?? 0) + CLUSTER; c += CLUSTER) assert.equal(await now.get(c), 1, `cluster at ${c}`);
});

test('allocRunNow declines while another allocation holds the lock, and changes nothing', async () => {
  const { r } = await freshRefcounts();
  await r.allocRun(1); // the block is cached now
  const release = await r.allocLock.acquire();
  try {
    assert.equal(r.allocRunNow(1), null);
  } finally {
    release();
  }
  const next = r.allocRunNow(1);
  assert.ok(next !== null);
  assert.equal(await r.get(next.offset), 1);
  assert.equal(await r.get(next.offset + CLUSTER), 0, 'the declined call took nothing');
});

test('allocRunNow declines when the clusters at the hint are not all free (allocRun searches on)', async () => {
  const { r } = await freshRefcounts();
  const first = await r.allocRun(1);
  // A cluster in use right after the hint (a table placed there by someone else).
  await r.update(first.offset + 2 * CLUSTER, CLUSTER, 1);
  assert.equal(r.allocRunNow(3), null);
  assert.equal(await r.get(first.offset + CLUSTER), 0, 'nothing taken by the declined call');
  const searched = await r.allocRun(3);
  assert.equal(searched.offset, first.offset + 3 * CLUSTER, 'allocRun steps past the cluster in use');
  // One free cluster is left behind the hint's old place; a single one still comes from the hint.
  const single = r.allocRunNow(1);
  assert.ok(single !== null);
  assert.equal(single.offset, searched.offset + 3 * CLUSTER);
});

test('allocRunNow declines while freed clusters wait for a flush', async () => {
  const { r } = await freshRefcounts();
  const a = await r.allocRun(2);
  await r.free(a.offset, CLUSTER);
  assert.equal(r.allocRunNow(1), null);
  const epoch = r.beginFlush();
  r.flushed(epoch);
  const reused = r.allocRunNow(1);
  assert.ok(reused !== null);
  assert.equal(reused.offset, a.offset, 'after the flush the freed cluster is the lowest free one again');
});

test('allocRunNow declines when the block is not cached or the run leaves the block', async () => {
  const { r } = await freshRefcounts();
  assert.equal(r.allocRunNow(1), null, 'nothing loaded yet');
  await r.allocRun(1);
  const blockEntries = (CLUSTER * 8) / 16;
  assert.equal(r.allocRunNow(blockEntries), null, 'a run longer than what is left of the block');
  assert.ok(r.allocRunNow(1) !== null);
});

test('allocRunNow declines when the file must grow first, and places into reserved space', async () => {
  const { r, host, growth } = await freshRefcounts('reserving');
  assert.ok(growth !== null);
  const a = await r.allocRun(1); // grows the file: the run plus 8 clusters reserved
  assert.ok(a.fresh, 'past the end of the file it was opened with');
  const size = await host.size();
  const inside = r.allocRunNow(2);
  assert.ok(inside !== null);
  assert.ok(inside.fresh);
  assert.equal(growth.usedEnd, inside.offset + 2 * CLUSTER, 'the run is recorded as used');
  const left = (size - growth.usedEnd) / CLUSTER;
  assert.equal(r.allocRunNow(left + 1), null, 'a run past the reserved space');
  assert.equal(growth.usedEnd, inside.offset + 2 * CLUSTER, 'nothing recorded by the declined call');
  assert.equal(await host.size(), size, 'and the file did not grow');
  assert.ok(r.allocRunNow(left) !== null);
});

test('allocRunNow sets the refcount bits as allocRun does for each refcount width', async () => {
  for (const bits of [1, 2, 4, 8, 16, 32, 64]) {
    const r = await refcountsOver(new MemoryHostFile('w.qcow2', await freshImageBytes(64 * 1024 ** 2, { refcount_bits: String(bits) })));
    await r.allocRun(1);
    const run = r.allocRunNow(3);
    assert.ok(run !== null, `refcount_bits=${bits}`);
    for (let k = 0; k < 3; k++) assert.equal(await r.get(run.offset + k * CLUSTER), 1, `refcount_bits=${bits}, cluster ${k}`);
    assert.equal(await r.get(run.offset + 3 * CLUSTER), 0, `refcount_bits=${bits}, after the run`);
    assert.equal(await r.get(run.offset - CLUSTER), 1, `refcount_bits=${bits}, before the run`);
  }
});
