import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DirtyBitmap } from '../../../src/block/dirty-bitmap.js';
import { CopyPool, copyAllDirty } from '../../../src/jobs/copy.js';
import { makeChain, readAll } from './job-fixtures.js';

/** A promise and the function that settles it. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open = (): void => undefined;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

test('steps in flight never share a buffer, and finished steps hand theirs on', async () => {
  const pool = new CopyPool(2, 16);
  const seen: Uint8Array[] = [];
  const gates = [gate(), gate(), gate()];
  for (const g of gates.slice(0, 2)) {
    await pool.add(async (buf) => {
      seen.push(buf);
      await g.promise;
    });
  }
  assert.equal(pool.size, 2);
  assert.notEqual(seen[0], seen[1]);
  assert.equal(seen[0]?.length, 16);
  gates[0]?.open();
  await pool.add(async (buf) => {
    seen.push(buf);
    await gates[2]?.promise;
  });
  assert.equal(seen[2], seen[0], 'the first step is done: its buffer is reused');
  gates[1]?.open();
  gates[2]?.open();
  await pool.drain();
  assert.equal(pool.size, 0);
});

test('a step over a range in flight waits for it, even with free slots', async () => {
  const pool = new CopyPool(4, 0);
  const order: string[] = [];
  const first = gate();
  await pool.add(
    async () => {
      order.push('first start');
      await first.promise;
      order.push('first end');
    },
    { offset: 0, length: 65536 },
  );
  await pool.add(async () => void order.push('disjoint'), { offset: 65536, length: 65536 });
  const overlapping = pool.add(async () => void order.push('overlapping'), { offset: 4096, length: 4096 });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, ['first start', 'disjoint']);
  first.open();
  await overlapping;
  await pool.drain();
  assert.deepEqual(order, ['first start', 'disjoint', 'first end', 'overlapping']);
});

test('a failed step is rethrown by drain', async () => {
  const pool = new CopyPool(2, 0);
  await pool.add(() => Promise.reject(new Error('EIO on the target')));
  await assert.rejects(pool.drain(), /EIO on the target/);
});

test('copyAllDirty copies every dirty range and leaves the bitmap clean', async () => {
  const length = 1 << 20;
  const { top: source } = await makeChain(length, 1, (_i, d) => {
    for (let off = 0; off < length; off += 4096) void d.write(off, new Uint8Array(4096).fill((off >> 12) & 0xff));
  });
  const { top: target } = await makeChain(length, 1, () => undefined);
  const bitmap = new DirtyBitmap(length, 65536);
  for (const off of [0, 65536 * 3, 65536 * 4, 65536 * 15]) bitmap.set(off, 4096);
  await copyAllDirty(bitmap, { read: (o, b) => source.read(o, b), target }, { chunk: 131072, inFlight: 2 });
  assert.equal(bitmap.count, 0);
  const want = await readAll(source);
  const got = await readAll(target);
  assert.equal(want[65536 * 3], 48, 'the source holds data');
  for (const off of [0, 65536 * 3, 65536 * 4, 65536 * 15]) {
    assert.deepEqual(got.subarray(off, off + 65536), want.subarray(off, off + 65536), `granule at ${off}`);
  }
  assert.ok(got.subarray(65536, 65536 * 2).every((b) => b === 0), 'a clean granule is not copied');
});
