import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openChain, qemuCheck, qemuCompare, qemuImg, qemuIo, qemuRaw, readAll, tmpDir } from './qcow2-helpers.js';
import type { Qcow2Driver } from '../../src/formats/qcow2/qcow2-driver.js';

/** A qemu-io-like op, applied both by qemu-io and by our driver. */
type Op = { w: [number, number, number] } | { z: [number, number, boolean] } | { d: [number, number] } | { c: [number, number] };

function qemuCmd(op: Op): string {
  if ('w' in op) return `write -P ${op.w[2]} ${op.w[0]} ${op.w[1]}`;
  if ('z' in op) return `write -z ${op.z[2] ? '-u ' : ''}${op.z[0]} ${op.z[1]}`;
  if ('c' in op) return `write -c -P ${op.c[1]} ${op.c[0]} 65536`;
  return `discard ${op.d[0]} ${op.d[1]}`;
}

async function apply(d: Qcow2Driver, op: Op): Promise<void> {
  if ('w' in op) await d.write(op.w[0], new Uint8Array(op.w[1]).fill(op.w[2]));
  else if ('z' in op) await d.writeZeroes(op.z[0], op.z[1], { mayUnmap: op.z[2] });
  else if ('c' in op) await d.writeCompressed(op.c[0], new Uint8Array(65536).fill(op.c[1]));
  else await d.discard(op.d[0], op.d[1]);
}

const K = 1024;
const OPS: Op[] = [
  { w: [0, 64 * K, 0xab] },
  { w: [100 * K, 3 * K, 0x11] },
  { w: [190 * K, 200 * K, 0x22] },
  { w: [101 * K, 1 * K, 0x33] },
  { z: [192 * K, 64 * K, false] },
  { z: [256 * K, 64 * K, true] },
  { z: [1000 * K, 5 * K, false] },
  { d: [320 * K, 128 * K] },
  { w: [2 * 1024 * K - 5 * K, 5 * K, 0x44] },
  { w: [640 * K, 1024 * K, 0x55] },
];

async function runBoth(opts: { create: string; size: string; ops: Op[]; backing?: boolean }): Promise<void> {
  const dir = tmpDir();
  try {
    const ours = path.join(dir, 'ours.qcow2');
    const theirs = path.join(dir, 'theirs.qcow2');
    const createArgs = ['create', '-f', 'qcow2', '-o', opts.create];
    if (opts.backing) {
      const base = path.join(dir, 'base.qcow2');
      qemuImg('create', '-f', 'qcow2', base, opts.size);
      qemuIo(base, 'write -P 0x0f 0 ' + opts.size);
      createArgs.push('-b', 'base.qcow2', '-F', 'qcow2');
    }
    qemuImg(...createArgs, ours, opts.size);
    fs.copyFileSync(ours, theirs);
    qemuIo(theirs, ...opts.ops.map(qemuCmd));
    const chain = await openChain(ours, false);
    try {
      for (const op of opts.ops) await apply(chain.top, op);
      await chain.top.flush();
      const mine = await readAll(chain.top);
      assert.ok(mine.equals(qemuRaw(theirs)), 'our reads differ from qemu-io result');
    } finally {
      await chain.close();
    }
    assert.ok(qemuCompare(ours, theirs), 'qemu-img compare differs');
    const check = qemuCheck(ours);
    assert.equal(check.corruptions ?? 0, 0, `corruptions: ${JSON.stringify(check)}`);
    assert.equal(check.leaks ?? 0, 0, `leaks: ${JSON.stringify(check)}`);
    assert.equal(check['check-errors'] ?? 0, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

for (const create of [
  'compat=1.1',
  'compat=0.10',
  'cluster_size=512',
  'cluster_size=4k,refcount_bits=1',
  'cluster_size=512,refcount_bits=64',
  'refcount_bits=8,cluster_size=2M',
  'extended_l2=on',
  'extended_l2=on,cluster_size=2M',
]) {
  test(`writes, zeroes and discards match qemu-io and check clean: ${create}`, async () => {
    await runBoth({ create, size: '2M', ops: OPS });
  });
}

test('writes over a backing file: COW from the backing, v2 and v3', async () => {
  await runBoth({ create: 'compat=1.1', size: '2M', ops: OPS, backing: true });
  await runBoth({ create: 'compat=0.10', size: '2M', ops: OPS, backing: true });
  await runBoth({ create: 'extended_l2=on', size: '2M', ops: OPS, backing: true });
});

test('compressed writes (zlib and zstd) match qemu-io and check clean', async () => {
  const ops: Op[] = [{ c: [0, 0x61] }, { c: [65536, 0x62] }, { c: [4 * 65536, 0x63] }, { w: [65536 + 100, 50, 0x64] }, { z: [0, 65536, true] }];
  await runBoth({ create: 'compression_type=zlib', size: '1M', ops });
  await runBoth({ create: 'compression_type=zstd', size: '1M', ops });
});

test('writes after an internal snapshot copy shared clusters and keep COPIED right', async () => {
  const dir = tmpDir();
  try {
    const f = path.join(dir, 's.qcow2');
    qemuImg('create', '-f', 'qcow2', f, '1M');
    qemuIo(f, 'write -P 0x10 0 1M');
    qemuImg('snapshot', '-c', 's1', f);
    const chain = await openChain(f, false);
    try {
      await chain.top.write(4096, new Uint8Array(10000).fill(0x20));
      await chain.top.writeZeroes(512 * 1024, 65536, { mayUnmap: true });
      await chain.top.discard(768 * 1024, 65536);
    } finally {
      await chain.close();
    }
    const check = qemuCheck(f);
    assert.equal(check.corruptions ?? 0, 0, JSON.stringify(check));
    assert.equal(check.leaks ?? 0, 0, JSON.stringify(check));
    const raw = qemuRaw(f);
    assert.equal(raw[4096], 0x20);
    assert.equal(raw[4095], 0x10);
    assert.equal(raw[512 * 1024], 0);
    qemuImg('snapshot', '-a', 's1', f);
    assert.ok(qemuRaw(f).every((b) => b === 0x10), 'snapshot content changed');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('refcount table growth and L1 growth by resize keep check clean', async () => {
  const dir = tmpDir();
  try {
    const f = path.join(dir, 'g.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', f, '64k');
    const chain = await openChain(f, false);
    try {
      await chain.top.resize(8 * 1024 * 1024);
      await chain.top.write(0, new Uint8Array(8 * 1024 * 1024).fill(0x7e));
      assert.equal(chain.top.length, 8 * 1024 * 1024);
    } finally {
      await chain.close();
    }
    const check = qemuCheck(f);
    assert.equal(check.corruptions ?? 0, 0, JSON.stringify(check));
    assert.equal(check.leaks ?? 0, 0, JSON.stringify(check));
    assert.ok(qemuRaw(f).every((b) => b === 0x7e));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('allocation after discards takes the lowest free run that fits and then moves on, as qemu does: the same host offsets', async () => {
  const dir = tmpDir();
  try {
    const ours = path.join(dir, 'ours.qcow2');
    const theirs = path.join(dir, 'theirs.qcow2');
    qemuImg('create', '-f', 'qcow2', ours, '8M');
    // 32 data clusters, then a one-cluster and a four-cluster hole in them (freed: refcount 0).
    qemuIo(ours, 'write -P 1 0 2M', 'discard 256k 64k', 'discard 512k 256k');
    fs.copyFileSync(ours, theirs);
    const writes: Array<[number, number, number]> = [
      [4 * 1024 * K, 256 * K, 2], // four clusters: the four-cluster hole, not the one before it
      [5 * 1024 * K, 64 * K, 3], // one: after them (the search goes on from there), not the one-cluster hole
      [6 * 1024 * K, 128 * K, 4],
    ];
    qemuIo(theirs, ...writes.map(([at, len, p]) => `write -P ${p} ${at} ${len}`));
    const chain = await openChain(ours, false);
    try {
      for (const [at, len, p] of writes) await chain.top.write(at, new Uint8Array(len).fill(p));
      await chain.top.flush();
    } finally {
      await chain.close();
    }
    const map = (f: string): unknown => JSON.parse(qemuImg('map', '--output=json', f));
    assert.deepEqual(map(ours), map(theirs));
    assert.ok(qemuCompare(ours, theirs));
    const check = qemuCheck(ours);
    assert.equal(check.corruptions ?? 0, 0);
    assert.equal(check.leaks ?? 0, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
