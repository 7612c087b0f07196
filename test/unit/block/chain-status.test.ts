import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockNode } from '../../../src/block/node.js';
import type { ChainExtent } from '../../../src/block/types.js';
import { isVdiskError } from '../../../src/errors.js';
import { FakeDriver } from './fake-driver.js';

const K = 4096;

/** Builds a chain from drivers given top first. */
async function chainOf(...drivers: FakeDriver[]): Promise<BlockNode> {
  let below: BlockNode | null = null;
  for (const d of [...drivers].reverse()) below = await BlockNode.attach(d, { backing: below });
  assert.ok(below);
  return below;
}

/** Compact view of extents: offset:length:depth:present/zero/data flags. */
function brief(extents: readonly ChainExtent[]): string[] {
  return extents.map((e) => `${e.offset}+${e.length} d${e.depth} ${e.present ? 'P' : '-'}${e.zero ? 'Z' : '-'}${e.data ? 'D' : '-'}`);
}

test('the topmost layer that allocates a range decides it, with its depth', async () => {
  const base = new FakeDriver({ filename: 'base', length: 16 * K }).set(0, 8 * K, 'data', 1);
  const mid = new FakeDriver({ filename: 'mid', length: 16 * K }).set(2 * K, 2 * K, 'zero');
  const top = new FakeDriver({ filename: 'top', length: 16 * K }).set(K, 2 * K, 'data', 3);
  const node = await chainOf(top, mid, base);
  assert.deepEqual(brief(await node.blockStatus(0, 16 * K)), [
    `0+${K} d2 P-D`,
    `${K}+${2 * K} d0 P-D`,
    `${3 * K}+${K} d1 PZ-`,
    `${4 * K}+${4 * K} d2 P-D`,
    `${8 * K}+${8 * K} d2 -Z-`,
  ]);
});

test('a range no layer allocates is reported at the bottom layer\'s depth (chain length - 1), as qemu-img map does', async () => {
  const base = new FakeDriver({ filename: 'base', length: 8 * K });
  const top = new FakeDriver({ filename: 'top', length: 8 * K });
  const node = await chainOf(top, base);
  assert.deepEqual(brief(await node.blockStatus(0, 8 * K)), [`0+${8 * K} d1 -Z-`]);
  const single = await chainOf(new FakeDriver({ filename: 'only', length: 8 * K }));
  assert.deepEqual(brief(await single.blockStatus(0, 8 * K)), [`0+${8 * K} d0 -Z-`]);
});

test('past the end of a shorter backing, unallocated ranges are zeros at the overlay\'s depth', async () => {
  const base = new FakeDriver({ filename: 'base', length: 4 * K }).set(0, 4 * K, 'data');
  const top = new FakeDriver({ filename: 'top', length: 8 * K });
  const node = await chainOf(top, base);
  assert.deepEqual(brief(await node.blockStatus(0, 8 * K)), [`0+${4 * K} d1 P-D`, `${4 * K}+${4 * K} d0 -Z-`]);
});

test('with a base, ranges defined only by the base are neither zero nor data', async () => {
  const base = new FakeDriver({ filename: 'base', length: 8 * K }).set(0, 8 * K, 'data');
  const mid = new FakeDriver({ filename: 'mid', length: 8 * K }).set(0, K, 'data');
  const top = new FakeDriver({ filename: 'top', length: 8 * K }).set(4 * K, K, 'zero');
  const node = await chainOf(top, mid, base);
  const baseNode = node.chain()[2] ?? null;
  assert.deepEqual(brief(await node.blockStatus(0, 8 * K, { base: baseNode })), [
    `0+${K} d1 P-D`,
    `${K}+${3 * K} d1 ---`,
    `${4 * K}+${K} d0 PZ-`,
    `${5 * K}+${3 * K} d1 ---`,
  ]);
  await assert.rejects(node.blockStatus(0, K, { base: node }), (e) => isVdiskError(e, 'EINVAL'));
});

test('data extents carry the host offset and file, and contiguous ones coalesce', async () => {
  const top = new FakeDriver({ filename: 'top.img', length: 8 * K }).set(0, 3 * K, 'data');
  const node = await chainOf(top);
  const [first] = await node.blockStatus(0, 8 * K);
  assert.deepEqual(first, { offset: 0, length: 3 * K, present: true, zero: false, data: true, depth: 0, hostOffset: 0x100000, hostFile: 'top.img' });
});

test('each layer is asked once for the whole range, and lower layers only for what is left undefined', async () => {
  const base = new FakeDriver({ filename: 'base', length: 64 * K });
  const top = new FakeDriver({ filename: 'top', length: 64 * K }).set(8 * K, 8 * K, 'data').set(32 * K, 8 * K, 'data');
  const node = await chainOf(top, base);
  await node.blockStatus(0, 64 * K);
  assert.deepEqual(top.statusCalls, [[0, 64 * K]]);
  assert.deepEqual(base.statusCalls, [
    [0, 8 * K],
    [16 * K, 16 * K],
    [40 * K, 24 * K],
  ]);
});

test('a driver reporting a bad extent is an EIO error, never a hang', async () => {
  const top = new FakeDriver({ filename: 'top', length: 8 * K });
  top.blockStatus = async () => [{ length: 0, allocated: true, zero: false, data: true }];
  const node = await chainOf(top);
  await assert.rejects(node.blockStatus(0, 8 * K), (e) => isVdiskError(e, 'EIO'));
  top.blockStatus = async () => [];
  await assert.rejects(node.blockStatus(0, 8 * K), (e) => isVdiskError(e, 'EIO'));
});

test('a driver that covers only part of a range is asked again for the rest', async () => {
  const top = new FakeDriver({ filename: 'top', length: 8 * K }).set(0, 8 * K, 'data');
  const real = top.blockStatus.bind(top);
  top.blockStatus = async (offset, length) => real(offset, Math.min(length, K));
  const node = await chainOf(top);
  assert.deepEqual(brief(await node.blockStatus(0, 8 * K)), [`0+${8 * K} d0 P-D`]);
});

test('seekData and seekHole treat zero ranges as holes and the end as a hole', async () => {
  const base = new FakeDriver({ filename: 'base', length: 16 * K }).set(4 * K, 2 * K, 'data');
  const top = new FakeDriver({ filename: 'top', length: 16 * K }).set(5 * K, K, 'zero').set(10 * K, 6 * K, 'data');
  const node = await chainOf(top, base);
  assert.equal(await node.seekData(0), 4 * K);
  assert.equal(await node.seekHole(4 * K), 5 * K);
  assert.equal(await node.seekData(5 * K), 10 * K);
  assert.equal(await node.seekHole(10 * K), 16 * K);
  assert.equal(await node.seekHole(K), K);
  assert.equal(await node.seekData(4 * K + 7), 4 * K + 7);
  await assert.rejects(node.seekData(16 * K), (e) => isVdiskError(e, 'ENXIO'));
  await assert.rejects(node.seekHole(16 * K), (e) => isVdiskError(e, 'ENXIO'));
  const empty = await chainOf(new FakeDriver({ filename: 'e', length: 8 * K }));
  await assert.rejects(empty.seekData(0), (e) => isVdiskError(e, 'ENXIO'));
  assert.equal(await empty.seekHole(0), 0);
});

test('reads fall through to the backing and are zero past its end', async () => {
  const base = new FakeDriver({ filename: 'base', length: 2 * K }).set(0, 2 * K, 'data', 7);
  const top = new FakeDriver({ filename: 'top', length: 4 * K }).set(0, K, 'data', 9);
  const node = await chainOf(top, base);
  const buf = new Uint8Array(4 * K).fill(0xff);
  await node.read(0, buf);
  assert.equal(buf[0], 9);
  assert.equal(buf[K], 7);
  assert.equal(buf[2 * K - 1], 7);
  assert.equal(buf[2 * K], 0);
  assert.equal(buf[4 * K - 1], 0);
});
