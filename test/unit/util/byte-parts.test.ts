/** Ranges of a byte sequence given as buffers back to back. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyParts, sliceParts } from '../../../src/util/byte-parts.js';

const parts = [Uint8Array.from([0, 1, 2]), new Uint8Array(0), Uint8Array.from([3, 4]), Uint8Array.from([5, 6, 7, 8])];

test('a range across buffers is copied and viewed as if they were one', () => {
  const dst = new Uint8Array(8).fill(0xff);
  copyParts(parts, 2, 7, dst, 1);
  assert.deepEqual([...dst], [0xff, 2, 3, 4, 5, 6, 0xff, 0xff]);
  const views = sliceParts(parts, 2, 7);
  assert.deepEqual(views.map((v) => [...v]), [[2], [3, 4], [5, 6]]);
  assert.equal(views[1]?.buffer, parts[2]?.buffer, 'views, not copies');
  assert.deepEqual(sliceParts(parts, 0, 9).flatMap((v) => [...v]), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(sliceParts(parts, 4, 4), []);
});
