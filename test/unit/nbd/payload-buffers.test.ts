import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PayloadBuffers } from '../../../src/nbd/server/payload-buffers.js';

test('large payload buffers are reused by exact size up to the idle cap; small ones are always fresh and zeroed', () => {
  const pool = new PayloadBuffers(256 * 1024);
  const a = pool.take(128 * 1024);
  pool.give(a);
  assert.equal(pool.pooledBytes, 128 * 1024);
  assert.equal(pool.take(128 * 1024), a, 'same size: reused');
  assert.equal(pool.pooledBytes, 0);
  pool.give(a);
  assert.notEqual(pool.take(192 * 1024), a, 'another size: a new buffer');

  const b = pool.take(128 * 1024);
  const c = pool.take(128 * 1024);
  const d = pool.take(128 * 1024);
  pool.give(b);
  pool.give(c);
  pool.give(d);
  assert.equal(pool.pooledBytes, 256 * 1024, 'the third buffer is dropped: over the cap');

  const small = pool.take(4096);
  small.fill(7);
  pool.give(small);
  assert.ok(pool.take(4096).every((x) => x === 0));
  assert.equal(pool.pooledBytes, 256 * 1024);
});
