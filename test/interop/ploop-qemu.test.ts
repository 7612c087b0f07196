// The ploop driver against QEMU's parallels driver (qemu-img / qemu-io 7.2) as the oracle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { createPloop, PloopDriver } from '../../src/formats/ploop/index.js';
import { withDir } from '../support/temp-dir.js';

function run(cmd: string, args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.error) throw r.error;
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function ok(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function toRaw(img: string, dir: string): Buffer {
  const raw = join(dir, 'out.raw');
  ok('qemu-img', ['convert', '-f', 'parallels', '-O', 'raw', img, raw]);
  const b = fs.readFileSync(raw);
  fs.rmSync(raw);
  return b;
}

async function readAll(path: string): Promise<Buffer> {
  const d = await PloopDriver.open(path, { readOnly: true });
  try {
    const buf = new Uint8Array(d.length);
    await d.read(0, buf);
    return Buffer.from(buf);
  } finally {
    await d.close();
  }
}

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

for (const [opts, size] of [
  [[], '10M'],
  [['cluster_size=4k'], '10M'],
  [['cluster_size=1000'], '1001'],
  [['cluster_size=64512'], '10M'],
  [['cluster_size=512'], '3M'],
] as const) {
  test(`create is byte-identical to qemu-img create -f parallels ${opts.join(',') || '(defaults)'} ${size}`, withDir(async (dir) => {
    const theirs = join(dir, 'q.img');
    const ours = join(dir, 'v.img');
    ok('qemu-img', ['create', '-q', '-f', 'parallels', ...(opts.length ? ['-o', opts.join(',')] : []), theirs, size]);
    const bytes = Number(ok('qemu-img', ['info', '--output=json', theirs]).match(/"virtual-size": (\d+)/)?.[1]);
    const options: Record<string, string> = {};
    for (const o of opts) {
      const [k, v] = o.split('=');
      options[k as string] = v as string;
    }
    const requested = size === '10M' ? 10 * 1024 * 1024 : size === '3M' ? 3 * 1024 * 1024 : Number(size);
    await createPloop(ours, { size: requested, options });
    assert.equal(bytes >= requested, true);
    assert.equal(run('cmp', [theirs, ours]).status, 0, 'images differ');
  }));
}

test('reads an image written by qemu-io exactly as qemu-img convert does', withDir(async (dir) => {
  const img = join(dir, 'a.img');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', img, '4M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x11 3M 4k', '-c', 'write -P 0x22 100k 300k', img]);
  assert.deepEqual(await readAll(img), toRaw(img, dir));
}));

test('reads a 1 MiB-cluster image with qemu-io data at cluster edges', withDir(async (dir) => {
  const img = join(dir, 'a.img');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', img, '8M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x33 5119k 2k', img]);
  assert.deepEqual(await readAll(img), toRaw(img, dir));
}));

test('images written by vdisk pass qemu-img check and compare equal to the same qemu-io workload', withDir(async (dir) => {
  const ours = join(dir, 'v.img');
  const theirs = join(dir, 'q.img');
  for (const p of [ours, theirs]) ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', p, '4M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 1M', '-c', 'write -P 0x11 3M 4k', '-c', 'write -P 0x22 100k 300k', '-c', 'write -z 2M 64k', theirs]);
  const d = await PloopDriver.open(ours, { readOnly: false });
  await d.write(0, new Uint8Array(1024 * 1024).fill(0x5a));
  await d.write(3 * 1024 * 1024, new Uint8Array(4096).fill(0x11));
  await d.write(100 * 1024, new Uint8Array(300 * 1024).fill(0x22));
  await d.writeZeroes(2 * 1024 * 1024, 64 * 1024);
  await d.close();
  const check = run('qemu-img', ['check', '-f', 'parallels', ours]);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  const cmp = run('qemu-img', ['compare', '-f', 'parallels', '-F', 'parallels', ours, theirs]);
  assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
  assert.deepEqual(await readAll(ours), toRaw(theirs, dir));
}));

test('random unaligned writes through vdisk read back identically in qemu-img convert', withDir(async (dir) => {
  const img = join(dir, 'v.img');
  await createPloop(img, { size: 3 * 1024 * 1024, options: { cluster_size: '4k' } });
  const model = new Uint8Array(3 * 1024 * 1024);
  const d = await PloopDriver.open(img, { readOnly: false });
  let seed = 1;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const jobs: Promise<void>[] = [];
  let last = { off: 0, end: 0 };
  for (let i = 0; i < 60; i++) {
    const off = rnd(model.length - 20000);
    const data = pattern(1 + rnd(20000), i);
    model.set(data, off);
    // Two writes run at once, except overlapping ones: their order on the host is not defined.
    if (off < last.end && last.off < off + data.length) await Promise.all(jobs.splice(0));
    last = { off, end: off + data.length };
    jobs.push(d.write(off, data));
    await Promise.all(jobs.splice(0, jobs.length - 1));
  }
  await Promise.all(jobs);
  await d.close();
  assert.equal(run('qemu-img', ['check', '-f', 'parallels', img]).status, 0);
  assert.deepEqual(toRaw(img, dir), Buffer.from(model));
}));

test('an image open for writing is marked in use and clean again after close', withDir(async (dir) => {
  const img = join(dir, 'v.img');
  await createPloop(img, { size: 2 * 1024 * 1024, options: {} });
  const d = await PloopDriver.open(img, { readOnly: false });
  await d.write(0, new Uint8Array(512).fill(1));
  await d.flush();
  const busy = run('qemu-img', ['check', '-f', 'parallels', '-U', img]);
  assert.equal(busy.status, 2);
  assert.match(busy.stderr, /image was not closed correctly/);
  await d.close();
  assert.equal(run('qemu-img', ['check', '-f', 'parallels', img]).status, 0);
}));

test('an image left in use: read-only open works, read-write open repairs it, qemu then sees it clean', withDir(async (dir) => {
  const img = join(dir, 'a.img');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', img, '4M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 1M', img]);
  const fd = fs.openSync(img, 'r+');
  fs.writeSync(fd, Buffer.from([0x59, 0x6e, 0x6f, 0x74]), 0, 4, 44);
  fs.closeSync(fd);
  assert.equal(run('qemu-io', ['-f', 'parallels', '-c', 'read 0 512', img]).status, 1, 'qemu refuses read-write');
  const ro = await PloopDriver.open(img, { readOnly: true });
  const report = await ro.check('none');
  assert.equal(report.corruptions, 1);
  assert.deepEqual(report.messages, ['ERROR image was not closed correctly']);
  await ro.close();
  const rw = await PloopDriver.open(img, { readOnly: false });
  assert.equal((await rw.check('none')).corruptions, 0);
  await rw.close();
  assert.equal(run('qemu-img', ['check', '-f', 'parallels', img]).status, 0);
  assert.deepEqual(await readAll(img), toRaw(img, dir));
}));

test('check reports and repairs a BAT entry outside the image like qemu-img check -r all', withDir(async (dir) => {
  const img = join(dir, 'a.img');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', img, '4M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 128k', img]);
  const fd = fs.openSync(img, 'r+');
  const entry = Buffer.alloc(4);
  entry.writeUInt32LE(1000);
  fs.writeSync(fd, entry, 0, 4, 64 + 4 * 5);
  fs.closeSync(fd);
  await assert.rejects(PloopDriver.open(img, { readOnly: true }), (e: unknown) => {
    assert.match(String(e), /BAT entry 5 points to 0x3e80000, past end of file/);
    return true;
  });
  const theirs = run('qemu-img', ['check', '-f', 'parallels', img]);
  assert.match(theirs.stderr, /ERROR cluster 5 is outside image/);
  const d = await PloopDriver.open(img, { readOnly: false, noRepair: true });
  const before = await d.check('none');
  assert.equal(before.corruptions, 1);
  assert.deepEqual(before.messages, ['ERROR cluster 5 is outside image']);
  const fixed = await d.check('all');
  assert.equal(fixed.corruptionsFixed, 1);
  assert.equal((await d.check('none')).corruptions, 0);
  await d.close();
  assert.equal(run('qemu-img', ['check', '-f', 'parallels', img]).status, 0);
}));

test('check reports the same leak, allocation and end offset as qemu-img check', withDir(async (dir) => {
  const img = join(dir, 'a.img');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', img, '4M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 128k', '-c', 'write -P 1 1M 64k', img]);
  fs.truncateSync(img, fs.statSync(img).size + 100000);
  const theirs = run('qemu-img', ['check', '--output=json', '-f', 'parallels', img]);
  const q = JSON.parse(theirs.stdout) as Record<string, number>;
  const d = await PloopDriver.open(img, { readOnly: true });
  const r = await d.check('none');
  await d.close();
  assert.equal(r.leaks, q['leaks']);
  assert.equal(r.imageEndOffset, q['image-end-offset']);
  assert.equal(r.allocatedClusters, q['allocated-clusters']);
  assert.equal(r.fragmentedClusters, q['fragmented-clusters'] ?? 0);
  assert.equal(r.totalClusters, q['total-clusters']);
  assert.deepEqual(r.messages, ['ERROR space leaked at the end of the image 100352']);
  assert.match(theirs.stderr, /ERROR space leaked at the end of the image 100352/);
}));

test('a v1 (WithoutFreeSpace, sector-addressed) image reads like qemu reads it, and takes writes', withDir(async (dir) => {
  const img = join(dir, 'a.img');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', img, '2M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 64k', '-c', 'write -P 0x6b 1M 100k', img]);
  const bytes = fs.readFileSync(img);
  bytes.write('WithoutFreeSpace', 0, 'latin1');
  for (let i = 0; i < 32; i++) bytes.writeUInt32LE(bytes.readUInt32LE(64 + 4 * i) * 128, 64 + 4 * i);
  fs.writeFileSync(img, bytes);
  assert.deepEqual(await readAll(img), toRaw(img, dir));
  const d = await PloopDriver.open(img, { readOnly: false });
  await d.write(1500 * 1024, new Uint8Array(1000).fill(9));
  await d.close();
  assert.equal(run('qemu-img', ['check', '-f', 'parallels', img]).status, 0);
  assert.deepEqual(await readAll(img), toRaw(img, dir));
}));

test('blockStatus matches qemu-img map', withDir(async (dir) => {
  const img = join(dir, 'a.img');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', img, '4M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 128k', '-c', 'write -P 1 1M 64k', '-c', 'write 192k 64k', img]);
  const map = JSON.parse(ok('qemu-img', ['map', '--output=json', '-f', 'parallels', img])) as Array<Record<string, unknown>>;
  const d = await PloopDriver.open(img, { readOnly: true });
  const ext = await d.blockStatus(0, d.length);
  await d.close();
  let pos = 0;
  const ours = ext.map((e) => {
    const r = { start: pos, length: e.length, data: e.data, offset: e.hostOffset };
    pos += e.length;
    return r;
  });
  assert.deepEqual(
    ours,
    map.map((m) => ({ start: m['start'], length: m['length'], data: m['data'], offset: m['offset'] })),
  );
}));

test('resize grows the disk, moving data out of the enlarged BAT, and qemu reads the result', withDir(async (dir) => {
  const img = join(dir, 'a.img');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=4k', img, '1M']);
  ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 20k', '-c', 'write -P 0x11 1020k 4k', img]);
  const before = toRaw(img, dir);
  const d = await PloopDriver.open(img, { readOnly: false });
  await d.resize(8 * 1024 * 1024);
  await d.write(7 * 1024 * 1024, new Uint8Array(4096).fill(0x77));
  await d.close();
  const check = run('qemu-img', ['check', '-f', 'parallels', img]);
  assert.equal(check.status, 0, check.stderr);
  const after = toRaw(img, dir);
  assert.equal(after.length, 8 * 1024 * 1024);
  assert.deepEqual(after.subarray(0, before.length), before);
  assert.equal(after[7 * 1024 * 1024], 0x77);
  assert.deepEqual(await readAll(img), after);
}));

test('a writer reserves 128 MiB past its last cluster as QEMU does, close trims it, and a copy taken while open checks as QEMU checks it', withDir(async (dir) => {
  const MiB = 1024 * 1024;
  const img = join(dir, 'a.hds');
  ok('qemu-img', ['create', '-q', '-f', 'parallels', img, '64M']);
  const d = await PloopDriver.open(img, { readOnly: false });
  await d.write(0, new Uint8Array(MiB).fill(7));
  await d.write(3 * MiB + 512, new Uint8Array(4096).fill(8));
  await d.flush();
  // As seen of qemu-io writing its first cluster: header cluster + that cluster + prealloc-size;
  // the second cluster falls inside the reserved space.
  assert.equal(fs.statSync(img).size, MiB + MiB + 128 * MiB);
  const crashed = join(dir, 'crashed.hds');
  fs.copyFileSync(img, crashed);
  await d.close();
  assert.equal(fs.statSync(img).size, 3 * MiB, 'close leaves the file ending at its last cluster');
  assert.equal(run('qemu-img', ['check', '-f', 'parallels', img]).status, 0);

  const theirs = run('qemu-img', ['check', '--output=json', '-f', 'parallels', crashed]);
  const q = JSON.parse(theirs.stdout) as Record<string, number>;
  const ro = await PloopDriver.open(crashed, { readOnly: true });
  const r = await ro.check('none');
  await ro.close();
  assert.deepEqual({ leaks: r.leaks, corruptions: r.corruptions, end: r.imageEndOffset }, { leaks: q['leaks'], corruptions: q['corruptions'], end: q['image-end-offset'] });
  assert.deepEqual(r.messages, ['ERROR image was not closed correctly', `ERROR space leaked at the end of the image ${127 * MiB}`]);
  const rw = await PloopDriver.open(crashed, { readOnly: false });
  await rw.close();
  assert.equal(fs.statSync(crashed).size, 3 * MiB, 'the read-write open repaired the leak');
  assert.equal(run('qemu-img', ['check', '-f', 'parallels', crashed]).status, 0);
  assert.deepEqual(await readAll(crashed), toRaw(img, dir));
}));
