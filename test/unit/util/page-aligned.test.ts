import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pageAlignedBytes } from '../../../src/util/page-aligned.js';

test('page-aligned buffers have the length asked, start zeroed, and are independent', () => {
  for (const n of [1, 4096, 65536, 65537, 2 * 1024 * 1024]) {
    const a = pageAlignedBytes(n);
    assert.equal(a.length, n);
    assert.equal(a.byteOffset, 0);
    assert.ok(a.every((x) => x === 0));
    a.fill(7);
    assert.ok(pageAlignedBytes(n).every((x) => x === 0), 'a new buffer does not share memory with the last one');
  }
});
