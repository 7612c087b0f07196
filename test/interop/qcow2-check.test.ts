import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { NodeHostFile } from '../../src/host/node-file.js';
import { parseHeaderCluster, readHeaderCluster } from '../../src/formats/qcow2/header.js';
import { checkQcow2 } from '../../src/formats/qcow2/check.js';
import type { RepairMode } from '../../src/formats/driver.js';
import { withDir } from '../support/temp-dir.js';

interface QemuCheck {
  corruptions?: number;
  leaks?: number;
  'check-errors': number;
  'image-end-offset'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
}

function qemuCheck(path: string): QemuCheck {
  const r = spawnSync('qemu-img', ['check', '--output=json', path], { encoding: 'utf8' });
  return JSON.parse(r.stdout) as QemuCheck;
}

async function vdiskCheck(path: string, repair: RepairMode = 'none') {
  const host = await NodeHostFile.open(path, { readOnly: repair === 'none' });
  try {
    const parsed = parseHeaderCluster(await readHeaderCluster(host), { file: path, fileSize: await host.size() });
    return await checkQcow2({ host, file: path, parsed, repair });
  } finally {
    await host.close();
  }
}

function qemuIo(path: string, cmds: string[]): void {
  execFileSync('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), path], { stdio: 'pipe' });
}

function patch(path: string, offset: number, bytes: number[]): void {
  const fd = fs.openSync(path, 'r+');
  fs.writeSync(fd, Buffer.from(bytes), 0, bytes.length, offset);
  fs.closeSync(fd);
}

function readU64(path: string, offset: number): bigint {
  const b = Buffer.alloc(8);
  const fd = fs.openSync(path, 'r');
  fs.readSync(fd, b, 0, 8, offset);
  fs.closeSync(fd);
  return b.readBigUInt64BE(0);
}

async function assertSameCounts(path: string): Promise<void> {
  const q = qemuCheck(path);
  const v = await vdiskCheck(path);
  assert.equal(v.corruptions, q.corruptions ?? 0, `corruptions: ${v.messages.join('\n')}`);
  assert.equal(v.leaks, q.leaks ?? 0, `leaks: ${v.messages.join('\n')}`);
  assert.equal(v.checkErrors, q['check-errors']);
  if (q['image-end-offset'] !== undefined) assert.equal(v.imageEndOffset, q['image-end-offset']);
  if (q['total-clusters'] !== undefined) assert.equal(v.totalClusters, q['total-clusters']);
  if (q['allocated-clusters'] !== undefined) assert.equal(v.allocatedClusters, q['allocated-clusters'], 'allocated-clusters');
  if (q['fragmented-clusters'] !== undefined) assert.equal(v.fragmentedClusters, q['fragmented-clusters'], 'fragmented-clusters');
  if (q['compressed-clusters'] !== undefined) assert.equal(v.compressedClusters, q['compressed-clusters']);
}

/** An image with scattered data, a compressed cluster and a snapshot. */
function makeImage(dir: string, opts = ''): string {
  const p = `${dir}/a.qcow2`;
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), p, '64M']);
  qemuIo(p, ['write -P 1 0 192k', 'write -P 2 10M 64k', 'write -c -P 3 20M 64k', 'write -P 4 1M 4k']);
  return p;
}

test('check of clean images agrees with qemu-img check, including snapshots and compressed clusters', withDir(async (dir) => {
  const p = makeImage(dir);
  await assertSameCounts(p);
  execFileSync('qemu-img', ['snapshot', '-c', 's1', p]);
  qemuIo(p, ['write -P 9 0 64k']);
  await assertSameCounts(p);
  const v = await vdiskCheck(p);
  assert.equal(v.corruptions + v.leaks, 0, v.messages.join('\n'));
}));

test('check agrees with qemu-img for 512-byte clusters, refcount_bits=1 and extended L2', withDir(async (dir) => {
  for (const opts of ['cluster_size=512', 'refcount_bits=1', 'extended_l2=on,cluster_size=32k', 'refcount_bits=64,lazy_refcounts=on']) {
    const p = makeImage(dir, opts);
    await assertSameCounts(p);
    fs.rmSync(p);
  }
}));

/** Offset of the refcount block entry (16-bit refcounts) of host cluster `k`. */
function refcountEntryOffset(p: string, k: number): number {
  const reftable = Number(readU64(p, 48));
  const block = Number(readU64(p, reftable));
  return block + k * 2;
}

test('a raised refcount is a leak; -r leaks repairs it and qemu-img then finds the image clean', withDir(async (dir) => {
  const p = makeImage(dir);
  const fileClusters = Math.ceil(fs.statSync(p).size / 65536);
  // Count an extra reference to the last data cluster and to the header cluster.
  patch(p, refcountEntryOffset(p, fileClusters - 1), [0, 2]);
  patch(p, refcountEntryOffset(p, 0), [0, 3]);
  await assertSameCounts(p);
  const before = await vdiskCheck(p);
  assert.equal(before.leaks, 2);
  assert.ok(before.messages.some((m) => m === 'Leaked cluster 0 refcount=3 reference=1'), before.messages.join('\n'));
  const fixed = await vdiskCheck(p, 'leaks');
  assert.equal(fixed.leaksFixed, 2);
  assert.equal(fixed.leaks, 0);
  const q = qemuCheck(p);
  assert.equal((q.leaks ?? 0) + (q.corruptions ?? 0), 0);
}));

test('a lowered refcount is a corruption with COPIED errors; -r all repairs it', withDir(async (dir) => {
  const p = makeImage(dir);
  execFileSync('qemu-img', ['snapshot', '-c', 's1', p]);
  // Find a data cluster of the active L1's first L2 table; its refcount is 2 (shared with the snapshot).
  const l1 = Number(readU64(p, 40));
  const l2 = Number(readU64(p, l1) & 0x00fffffffffffe00n);
  const data = Number(readU64(p, l2) & 0x00fffffffffffe00n) / 65536;
  patch(p, refcountEntryOffset(p, data), [0, 1]);
  await assertSameCounts(p);
  const before = await vdiskCheck(p);
  assert.ok(before.messages.some((m) => m === `ERROR cluster ${data} refcount=1 reference=2`), before.messages.join('\n'));
  assert.ok(before.messages.some((m) => m.startsWith('ERROR OFLAG_COPIED data cluster')), before.messages.join('\n'));
  const fixed = await vdiskCheck(p, 'all');
  assert.equal(fixed.corruptions, 0, fixed.messages.join('\n'));
  const q = qemuCheck(p);
  assert.equal((q.leaks ?? 0) + (q.corruptions ?? 0), 0);
}));

test('a zero refcount for a used cluster forces a rebuild under -r all, after which qemu-img is clean', withDir(async (dir) => {
  const p = makeImage(dir);
  const l1 = Number(readU64(p, 40));
  const l2 = Number(readU64(p, l1) & 0x00fffffffffffe00n) / 65536;
  patch(p, refcountEntryOffset(p, l2), [0, 0]);
  await assertSameCounts(p);
  const leaksOnly = await vdiskCheck(p, 'leaks');
  assert.ok(leaksOnly.messages.includes('ERROR need to rebuild refcount structures'));
  const fixed = await vdiskCheck(p, 'all');
  assert.equal(fixed.corruptions, 0, fixed.messages.join('\n'));
  assert.ok(fixed.messages.includes('Rebuilding refcount structure'));
  const q = qemuCheck(p);
  assert.equal((q.leaks ?? 0) + (q.corruptions ?? 0), 0, JSON.stringify(q));
  execFileSync('qemu-img', ['compare', '-q', p, p]);
}));

test('a wrong COPIED flag on an L1 entry is reported and repaired', withDir(async (dir) => {
  const p = makeImage(dir);
  const l1 = Number(readU64(p, 40));
  const entry = readU64(p, l1) & ~(1n << 63n);
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(entry);
  patch(p, l1, [...b]);
  await assertSameCounts(p);
  const v = await vdiskCheck(p);
  assert.ok(v.messages.some((m) => m.startsWith('ERROR OFLAG_COPIED L2 cluster: l1_index=0')), v.messages.join('\n'));
  await vdiskCheck(p, 'all');
  const q = qemuCheck(p);
  assert.equal(q.corruptions ?? 0, 0);
}));
