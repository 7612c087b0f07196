import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import { NodeHostFile } from '../../../src/host/node-file.js';
import { SLOW_SYNC_WRITE_MS, SyncWritePolicy } from '../../../src/host/sync-write-policy.js';
import { withDir } from '../../support/temp-dir.js';

test('synchronous writes stop after a slow one, for longer after each consecutive slow one, and resume after a fast one', () => {
  let now = 0;
  const policy = new SyncWritePolicy(1024, { clock: () => now });
  assert.equal(policy.allows(0), false, 'an empty write is never worth a syscall on the JS thread');
  assert.equal(policy.allows(1025), false, 'larger than the limit');
  assert.equal(policy.allows(1024), true);

  const slowWrite = (): void => {
    now += SLOW_SYNC_WRITE_MS + 1;
  };
  policy.timed(slowWrite);
  assert.equal(policy.allows(512), false, 'backing off right after a slow write');
  now += 49;
  assert.equal(policy.allows(512), false);
  now += 1;
  assert.equal(policy.allows(512), true, 'the first back-off lasts 50 ms');

  policy.timed(slowWrite);
  const from = now;
  now = from + 99;
  assert.equal(policy.allows(512), false, 'a second slow write in a row doubles the back-off');
  now = from + 100;
  assert.equal(policy.allows(512), true);

  policy.timed(() => undefined);
  policy.timed(slowWrite);
  now += 50;
  assert.equal(policy.allows(512), true, 'a fast write resets the back-off');
});

test('without back-off a slow write leaves later writes synchronous (a copy loop that waits for each write anyway)', () => {
  let now = 0;
  const policy = new SyncWritePolicy(1024, { clock: () => now, backOff: false });
  policy.timed(() => {
    now += SLOW_SYNC_WRITE_MS * 100;
  });
  assert.equal(policy.allows(1024), true);
  assert.equal(policy.allows(1025), false, 'the size limit still holds');
});

test('a write that throws is still timed, and its error reaches the caller', () => {
  let now = 0;
  const policy = new SyncWritePolicy(1024, { clock: () => now });
  assert.throws(() =>
    policy.timed(() => {
      now += 10;
      throw new Error('EIO');
    }),
  /EIO/);
  assert.equal(policy.allows(1), false);
});

test(
  'vectored writes with empty buffers among them, and writes of every size up to past the synchronous limit, land where asked',
  withDir(async (dir) => {
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, Buffer.alloc(0));
    const host = await NodeHostFile.open(file);
    const expected = Buffer.alloc(3 * 1024 * 1024 + 4096);
    try {
      await host.writev([new Uint8Array(0), new Uint8Array(4096).fill(1), new Uint8Array(0)], 512);
      expected.fill(1, 512, 512 + 4096);
      await host.writev([new Uint8Array(100).fill(2), new Uint8Array(0), new Uint8Array(300).fill(3)], 8192);
      expected.fill(2, 8192, 8292).fill(3, 8292, 8592);
      await host.writev([new Uint8Array(0)], 9000);
      let at = 16384;
      for (const size of [1, 4096, 65537, 1024 * 1024, 1024 * 1024 + 1]) {
        const v = (size % 250) + 4;
        await host.write(new Uint8Array(size).fill(v), at);
        expected.fill(v, at, at + size);
        at += size;
      }
      assert.equal(await host.size(), at);
    } finally {
      await host.close();
    }
    assert.ok(fs.readFileSync(file).equals(expected.subarray(0, fs.statSync(file).size)));
  }),
);
