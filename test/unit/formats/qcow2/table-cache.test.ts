/**
 * The metadata table cache: a scan through many more tables than it holds
 * reuses the buffers of evicted tables (a map of a 1 TiB image otherwise made
 * a fresh buffer per table), reused buffers hold the right table, and dirty
 * tables reach the file before their buffer is handed on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TableCache } from '../../../../src/formats/qcow2/table-cache.js';
import { MemoryHostFile } from '../../../crash/memory-host.js';

const TABLE = 65536;

/** A file of `count` tables, each filled with its own index (mod 251) plus one. */
function tablesBytes(count: number): Uint8Array {
  const bytes = new Uint8Array(count * TABLE);
  for (let i = 0; i < count; i++) bytes.fill((i % 251) + 1, i * TABLE, (i + 1) * TABLE);
  return bytes;
}
function tablesFile(count: number): MemoryHostFile {
  return new MemoryHostFile('tables.img', tablesBytes(count));
}

/** Reads that complete on a later turn of the event loop, as the file's do: loads overlap. */
class SlowReads extends MemoryHostFile {
  override async read(buf: Uint8Array, offset: number): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    return super.read(buf, offset);
  }
}

function assertTable(data: Uint8Array, index: number): void {
  assert.equal(data.length, TABLE);
  const want = (index % 251) + 1;
  assert.ok(data.every((b) => b === want), `table ${index} holds its own bytes`);
}

test('a scan that loads tables sixteen at a time makes no more buffers than the capacity plus those in flight', async () => {
  const capacity = 32; // 2 MiB of 64 KiB tables: carved out of one huge-page area
  const count = 640;
  const cache = new TableCache({ host: new SlowReads('tables.img', tablesBytes(count)), tableSize: TABLE, capacity });
  for (let i = 0; i < count; i += 16) {
    const burst = await Promise.all(Array.from({ length: 16 }, (_, k) => cache.acquire((i + k) * TABLE)));
    burst.forEach((t, k) => {
      assertTable(t.data, i + k);
      cache.release(t);
    });
  }
  assert.ok(cache.buffersMade <= capacity + 16, `${cache.buffersMade} buffers for ${count} tables`);
});

test('a small cache (under 2 MiB) reuses buffers the same way', async () => {
  const cache = new TableCache({ host: tablesFile(100), tableSize: TABLE, capacity: 4 });
  for (let i = 0; i < 100; i++) {
    const t = await cache.acquire(i * TABLE);
    assertTable(t.data, i);
    cache.release(t);
  }
  assert.ok(cache.buffersMade <= 5, `${cache.buffersMade} buffers`);
});

test('a dirty table is written back before its buffer is reused, and a fresh table is zero in a reused buffer', async () => {
  const host = tablesFile(40);
  const cache = new TableCache({ host, tableSize: TABLE, capacity: 32 });
  const first = await cache.acquire(0);
  first.data.fill(0xee);
  cache.markDirty(first);
  cache.release(first);
  for (let i = 1; i < 40; i++) cache.release(await cache.acquire(i * TABLE));
  const back = new Uint8Array(TABLE);
  await host.read(back, 0);
  assert.ok(back.every((b) => b === 0xee), 'the evicted dirty table reached the file');
  const fresh = await cache.acquire(40 * TABLE, true);
  assert.ok(fresh.data.every((b) => b === 0), 'a fresh table starts zeroed');
  cache.release(fresh);
  const again = await cache.acquire(0);
  assert.ok(again.data.every((b) => b === 0xee), 'the written table reads back');
  assert.ok(cache.buffersMade <= 33, `${cache.buffersMade} buffers`);
});

test('a cache of gigabytes (a large l2-cache-size) loads tables: its huge-page area is bounded, plain buffers past it', async () => {
  const cache = new TableCache({ host: tablesFile(4), tableSize: TABLE, capacity: (8 * 1024 ** 3) / TABLE });
  for (let i = 0; i < 4; i++) {
    const t = await cache.acquire(i * TABLE);
    assertTable(t.data, i);
    cache.release(t);
  }
});
