import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qcow2Available, qemu, tempDir, vdisk } from './cli-oracle.js';

/** Runs the same `create` line in two fresh directories and compares what both tools print. */
async function sameCreate(argv: readonly string[], prepare?: (dir: string) => void): Promise<void> {
  const q = tempDir();
  const v = tempDir();
  try {
    prepare?.(q.dir);
    prepare?.(v.dir);
    const expected = normalised(qemu('qemu-img', q.dir, ['create', ...argv]));
    const actual = normalised(await vdisk(v.dir, ['create', ...argv]));
    assert.deepEqual(actual, expected, `vdisk create ${argv.join(' ')}`);
  } finally {
    q.cleanup();
    v.cleanup();
  }
}

test('create raw prints the Formatting line of qemu-img and makes a file of the size', async () => {
  const t = tempDir();
  try {
    const r = await vdisk(t.dir, ['create', '-f', 'raw', 'd.img', '1M']);
    assert.equal(r.stdout, "Formatting 'd.img', fmt=raw size=1048576\n");
    assert.equal(r.status, 0);
    assert.equal(statSync(join(t.dir, 'd.img')).size, 1048576);
  } finally {
    t.cleanup();
  }
});

test('create matches qemu-img for raw sizes, suffixes, defaults and -q', async () => {
  await sameCreate(['-f', 'raw', 'a.img', '1M']);
  await sameCreate(['a.img', '100M']);
  await sameCreate(['-f', 'raw', 'a.img', '1.5k']);
  await sameCreate(['-f', 'raw', 'a.img', '0x1000']);
  await sameCreate(['-q', '-f', 'raw', 'a.img', '1M']);
  await sameCreate(['-f', 'raw', '-o', 'size=3M', 'a.img']);
  await sameCreate(['-f', 'raw', '-o', 'preallocation=full', 'a.img', '64k']);
});

test('create matches qemu-img for usage and option errors', async () => {
  await sameCreate([]);
  await sameCreate(['-f', 'raw', 'a.img']);
  await sameCreate(['-f', 'raw', 'a.img', '1Q']);
  await sameCreate(['-f', 'raw', 'a.img', '1M', 'extra']);
  await sameCreate(['-f', 'foo', 'a.img', '1M']);
  await sameCreate(['-f', 'raw', '-o', 'size=3M', 'a.img', '4M']);
  await sameCreate(['-f', 'raw', '-o', 'foo=bar', 'a.img', '1M']);
  await sameCreate(['--bogus', 'a.img']);
  await sameCreate(['-f']);
  await sameCreate(['-f', 'raw', '-b', 'x.img', '-F', 'raw', 'a.img', '1M']);
});

test('create -o help lists the options as qemu-img does, and creates nothing', async () => {
  await sameCreate(['-f', 'raw', '-o', 'help']);
  await sameCreate(['-f', 'qcow2', '-o', 'help']);
  await sameCreate(['-f', 'qcow2', '-o', '?', 'z.qcow2']);
  await sameCreate(['-f', 'raw', '-o', 'help', 'z.raw']);
  await sameCreate(['-o', 'help']);
  const t = tempDir();
  try {
    await vdisk(t.dir, ['create', '-f', 'raw', '-o', 'help', 'z.raw', '1M']);
    assert.equal(existsSync(join(t.dir, 'z.raw')), false);
  } finally {
    t.cleanup();
  }
});

test('create qcow2 prints the Formatting line of qemu-img for its options', async (t) => {
  if (!(await qcow2Available())) {
    t.skip('qcow2 driver not registered in this build');
    return;
  }
  await sameCreate(['-f', 'qcow2', 'a.qcow2', '1G']);
  await sameCreate(['-f', 'qcow2', '-o', 'refcount_bits=8,cluster_size=4096,size=5M', 'a.qcow2']);
  await sameCreate(['-f', 'qcow2', '-o', 'cluster_size=4k', '-o', 'compat=v3', 'a.qcow2', '5M']);
  await sameCreate(['-f', 'qcow2', '-o', 'lazy_refcounts=on', 'a.qcow2', '5M']);
  await sameCreate(['-f', 'qcow2', '-o', 'lazy_refcounts', 'a.qcow2', '5M']);
  await sameCreate(['-f', 'qcow2', '-o', 'cluster_size=abc', 'a.qcow2', '1M']);
  await sameCreate(['-f', 'qcow2', '-o', 'lazy_refcounts=maybe', 'a.qcow2', '1M']);
  await sameCreate(['-f', 'qcow2', '-o', 'refcount_bits=x', 'a.qcow2', '1M']);
  await sameCreate(['-f', 'qcow2', 'a.qcow2']);
});

test('create qcow2 with a backing file matches qemu-img, including its checks', async (t) => {
  if (!(await qcow2Available())) {
    t.skip('qcow2 driver not registered in this build');
    return;
  }
  const base = (dir: string): void => void qemu('qemu-img', dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '64M']);
  await sameCreate(['-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2'], base);
  await sameCreate(['-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', '128M'], base);
  await sameCreate(['-f', 'qcow2', '-b', 'base.qcow2', 'top.qcow2'], base);
  await sameCreate(['-f', 'qcow2', '-b', 'missing.qcow2', '-F', 'qcow2', 'top.qcow2', '1M'], base);
  await sameCreate(['-f', 'qcow2', '-u', '-b', 'missing.qcow2', '-F', 'qcow2', 'top.qcow2', '1M'], base);
  await sameCreate(['-f', 'qcow2', '-u', '-b', 'missing.qcow2', 'top.qcow2', '1M'], base);
  await sameCreate(['-f', 'qcow2', '-b', 'top.qcow2', '-F', 'qcow2', 'top.qcow2'], base);
  await sameCreate(['-f', 'qcow2', '-o', 'backing_file=base.qcow2,backing_fmt=qcow2', 'top.qcow2'], base);
});
