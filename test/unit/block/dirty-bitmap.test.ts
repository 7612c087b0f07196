import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DirtyBitmap } from '../../../src/block/dirty-bitmap.js';
import { isVdiskError } from '../../../src/errors.js';

test('a dirty bitmap marks every granule a write touches and counts them', () => {
  const b = new DirtyBitmap(1 << 20, 4096);
  b.set(4095, 2);
  assert.equal(b.count, 2);
  assert.ok(b.isDirty(0, 1));
  assert.ok(b.isDirty(4096, 1));
  assert.ok(!b.isDirty(8192, 4096));
  b.set(0, 4096);
  assert.equal(b.count, 2);
  b.clear(0, 4096);
  assert.equal(b.count, 1);
  assert.equal(b.dirtyBytes, 4096);
});

test('nextDirty returns contiguous dirty ranges bounded by maxLength and skips clean words', () => {
  const b = new DirtyBitmap(10 << 20, 65536);
  b.set(5 << 20, 5 * 65536);
  assert.deepEqual(b.nextDirty(0, 1 << 20), { offset: 5 << 20, length: 5 * 65536 });
  assert.deepEqual(b.nextDirty(0, 2 * 65536), { offset: 5 << 20, length: 2 * 65536 });
  assert.equal(b.nextDirty((5 << 20) + 5 * 65536, 1 << 20), null);
});

test('the last granule is clipped to the disk length', () => {
  const b = new DirtyBitmap(5000, 4096);
  b.set(0, 5000);
  assert.equal(b.count, 2);
  assert.equal(b.dirtyBytes, 5000);
  assert.deepEqual(b.nextDirty(4096, 1 << 20), { offset: 4096, length: 904 });
});

test('granularity must be a power of two between 512 and 64M', () => {
  for (const g of [0, 256, 3000, 128 << 20]) {
    assert.throws(() => new DirtyBitmap(1 << 20, g), (e) => isVdiskError(e, 'EINVAL'));
  }
});

test('merge sets every range dirty in the other bitmap, across granularities, and merging a bitmap into itself changes nothing', () => {
  const into = new DirtyBitmap(1 << 20, 4096);
  into.set(0, 1);
  const coarse = new DirtyBitmap(1 << 20, 65536);
  coarse.set(70000, 1);
  into.merge(coarse);
  // The coarse granule [65536, 131072) dirties the 16 fine granules it covers.
  assert.equal(into.count, 1 + 16);
  assert.deepEqual(into.nextDirty(4096, 1 << 20), { offset: 65536, length: 65536 });
  const fine = new DirtyBitmap(1 << 20, 512);
  fine.set(200000, 1);
  coarse.merge(fine);
  assert.equal(coarse.count, 2);
  assert.ok(coarse.isDirty(196608, 1));
  into.merge(into);
  assert.equal(into.count, 17);
});
