/**
 * The cache modes as QEMU's bdrv_parse_cache_mode defines them (O_DIRECT,
 * BDRV_O_NO_FLUSH, writethrough), and 'none-unsafe', the O_DIRECT mode with
 * flushes that do nothing that cache.direct=on,cache.no-flush=on opens.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cachePolicy, withoutSync } from '../../../src/formats/cache-mode.js';
import type { CacheMode } from '../../../src/formats/driver.js';
import type { HostFile } from '../../../src/host/host-file.js';

test('each cache mode opens O_DIRECT, syncs on flush and flushes each write as QEMU does', () => {
  const table: Record<CacheMode, [boolean, boolean, boolean]> = {
    writeback: [false, true, false],
    none: [true, true, false],
    unsafe: [false, false, false],
    writethrough: [false, true, true],
    directsync: [true, true, true],
    'none-unsafe': [true, false, false],
  };
  for (const [mode, [direct, syncOnFlush, flushEachWrite]] of Object.entries(table) as Array<[CacheMode, [boolean, boolean, boolean]]>) {
    assert.deepEqual(cachePolicy(mode), { direct, syncOnFlush, flushEachWrite }, mode);
  }
  assert.deepEqual(cachePolicy(undefined), cachePolicy('writeback'));
});

test('a host without sync never reaches the file for a sync, and passes everything else through', async () => {
  const calls: string[] = [];
  const host = {
    path: 'x.img',
    readOnly: false,
    sync: () => {
      calls.push('sync');
      return Promise.resolve();
    },
    write: (_buf: Uint8Array, offset: number) => {
      calls.push(`write ${offset}`);
      return Promise.resolve();
    },
  } as unknown as HostFile;
  const unsafe = withoutSync(host);
  await unsafe.write(new Uint8Array(1), 512);
  await unsafe.sync();
  assert.deepEqual(calls, ['write 512']);
  assert.equal(unsafe.path, 'x.img');
});
