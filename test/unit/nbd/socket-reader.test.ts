import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { SocketReader } from '../../../src/nbd/server/socket-reader.js';

test('bytes within one chunk come as a view of it; bytes over several chunks are gathered into the buffer given', async () => {
  const stream = new PassThrough();
  const reader = new SocketReader(stream);
  stream.write(Buffer.from([1, 2, 3, 4, 5, 6]));
  await new Promise((r) => setImmediate(r));
  const into = new Uint8Array(16);
  const a = reader.tryRead(2, into);
  assert.deepEqual([...(a ?? [])], [1, 2]);
  assert.notEqual(a?.buffer, into.buffer, 'one chunk: no copy');
  assert.equal(reader.tryRead(8, into), null, 'not all here yet');
  const pending = reader.read(8, into);
  stream.write(Buffer.from([7, 8, 9, 10]));
  const b = await pending;
  assert.deepEqual([...b], [3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(b.buffer, into.buffer, 'two chunks: gathered into the given buffer');
  assert.equal(reader.buffered, 0);
});
