import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readPieces } from '../../../src/nbd/server/command-handlers.js';
import { KnownData } from '../../../src/nbd/server/known-data.js';
import { MemoryNode } from './support/memory-node.js';
import { BlockNode } from '../../../src/block/node.js';
import { FakeDriver } from '../block/fake-driver.js';

const MiB = 1024 * 1024;

/** Counts block status queries of a node. */
function counting(node: MemoryNode): { calls: number } {
  const seen = { calls: 0 };
  const status = node.blockStatus.bind(node);
  node.blockStatus = (offset, length) => {
    seen.calls++;
    return status(offset, length);
  };
  return seen;
}

test('a READ maps ahead and remembers the data it found: the READs after it in that range skip the map', async () => {
  const node = new MemoryNode(16 * MiB);
  await node.write(0, new Uint8Array(4 * MiB).fill(7));
  const seen = counting(node);
  const known = new KnownData();
  const read = (offset: number): ReturnType<typeof readPieces> => readPieces(node, { offset, length: 256 * 1024 }, { oneChunk: false, alloc: (n) => new Uint8Array(n), known });

  assert.deepEqual((await read(0)).map((p) => p.kind), ['data']);
  assert.equal(seen.calls, 1);
  for (let o = 256 * 1024; o < 4 * MiB; o += 256 * 1024) assert.deepEqual((await read(o)).map((p) => p.kind), ['data']);
  assert.equal(seen.calls, 1, 'the rest of the data run was known');
  // Past the data run the map is asked again, and the hole is reported.
  assert.deepEqual((await read(4 * MiB)).map((p) => p.kind), ['hole']);
  assert.equal(seen.calls, 2);
});

test('remembered data is forgotten, so a READ after a zeroing request is told of the new hole', async () => {
  const node = new MemoryNode(16 * MiB);
  await node.write(0, new Uint8Array(4 * MiB).fill(7));
  const known = new KnownData();
  const opts = { oneChunk: false, alloc: (n: number): Uint8Array => new Uint8Array(n), known };
  await readPieces(node, { offset: 0, length: 256 * 1024 }, opts);
  await node.discard(MiB, MiB);
  const stale = await readPieces(node, { offset: MiB, length: 256 * 1024 }, opts);
  assert.deepEqual(stale.map((p) => p.kind), ['data'], 'still data: right, only less sparse');
  assert.ok(stale[0]?.kind === 'data' && stale[0].data.every((b) => b === 0));
  known.forget();
  assert.deepEqual((await readPieces(node, { offset: MiB, length: 256 * 1024 }, opts)).map((p) => p.kind), ['hole']);
});

test('a zeroing request from anywhere (another connection, a job) ends the memory: the next READ is told of the hole', async () => {
  const driver = new FakeDriver({ filename: 'shared.qcow2', length: 16 * MiB, cluster: 64 * 1024 }).set(0, 4 * MiB, 'data', 7);
  const node = await BlockNode.attach(driver);
  const known = new KnownData();
  const opts = { oneChunk: false, alloc: (n: number): Uint8Array => new Uint8Array(n), known };
  const epoch = node.zeroingEpoch;
  await readPieces(node, { offset: 0, length: 256 * 1024 }, opts);
  assert.ok(known.covers(MiB, 256 * 1024, node.zeroingEpoch), 'remembered while nothing zeroed');
  // Not through this reader (no forget): as a TRIM on another connection would.
  await node.writeZeroes(MiB, MiB, { mayUnmap: true });
  assert.notEqual(node.zeroingEpoch, epoch);
  assert.deepEqual((await readPieces(node, { offset: MiB, length: 256 * 1024 }, opts)).map((p) => p.kind), ['hole']);
  // A discard and a resize move the epoch too, whether or not they leave a hole.
  const before = node.zeroingEpoch;
  await node.discard(3 * MiB, 64 * 1024);
  assert.ok(node.zeroingEpoch > before);
  const beforeResize = node.zeroingEpoch;
  await node.resize(32 * MiB);
  assert.ok(node.zeroingEpoch > beforeResize);
  // Plain writes leave it alone: a sequential reader keeps its shortcut while a guest writes.
  const beforeWrite = node.zeroingEpoch;
  await node.write(0, new Uint8Array(4096).fill(1));
  assert.equal(node.zeroingEpoch, beforeWrite);
});
