import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalised, qcow2Available, qemu, tempDir, vdisk } from './cli-oracle.js';

async function sameOutput(dir: string, tool: 'qemu-img', argv: readonly string[]): Promise<void> {
  const expected = normalised(qemu(tool, dir, argv));
  const actual = normalised(await vdisk(dir, argv));
  assert.deepEqual(actual, expected, `vdisk ${argv.join(' ')}`);
}

test('info and map of a raw image match qemu-img, human and JSON', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    qemu('qemu-io', t.dir, ['-f', 'raw', '-c', 'write -P 1 64k 64k', '-c', 'write -P 2 512k 4k', 'r.img']);
    for (const extra of [[], ['-f', 'raw'], ['-U']]) {
      await sameOutput(t.dir, 'qemu-img', ['info', ...extra, 'r.img']);
      await sameOutput(t.dir, 'qemu-img', ['info', '--output=json', ...extra, 'r.img']);
      await sameOutput(t.dir, 'qemu-img', ['map', ...extra, 'r.img']);
      await sameOutput(t.dir, 'qemu-img', ['map', '--output=json', ...extra, 'r.img']);
    }
    await sameOutput(t.dir, 'qemu-img', ['info', '--backing-chain', '--output', 'json', 'r.img']);
    await sameOutput(t.dir, 'qemu-img', ['map', '-f', 'raw', '--output=json', '--start-offset=100000', '--max-length=500000', 'r.img']);
    await sameOutput(t.dir, 'qemu-img', ['map', '-f', 'raw', '--start-offset', '64k', '--max-length', '4k', 'r.img']);
  } finally {
    t.cleanup();
  }
});

test('info and map report errors as qemu-img does', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    await sameOutput(t.dir, 'qemu-img', ['info', 'missing.img']);
    await sameOutput(t.dir, 'qemu-img', ['info']);
    await sameOutput(t.dir, 'qemu-img', ['info', '--output=xml', 'r.img']);
    await sameOutput(t.dir, 'qemu-img', ['info', '-z', 'r.img']);
    await sameOutput(t.dir, 'qemu-img', ['map', 'missing.img']);
    await sameOutput(t.dir, 'qemu-img', ['map', '--output=yaml', 'r.img']);
    await sameOutput(t.dir, 'qemu-img', ['map', 'r.img', 'r.img']);
    await sameOutput(t.dir, 'qemu-img', ['bogus']);
    await sameOutput(t.dir, 'qemu-img', []);
  } finally {
    t.cleanup();
  }
});

test('info and map of qcow2 chains match qemu-img', async (t) => {
  if (!(await qcow2Available())) {
    t.skip('qcow2 driver not registered in this build');
    return;
  }
  const d = tempDir();
  try {
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'b.qcow2']);
    qemu('qemu-io', d.dir, ['-c', 'write -P 5 1M 128k', 'a.qcow2']);
    qemu('qemu-io', d.dir, ['-c', 'write -P 0xab 0 64k', '-c', 'write -z 4M 64k', '-c', 'write -P 7 1088k 64k', 'b.qcow2']);
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10,cluster_size=4k', 'old.qcow2', '1M']);
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,refcount_bits=1,lazy_refcounts=on', 'x.qcow2', '10M']);
    for (const file of ['a.qcow2', 'b.qcow2', 'old.qcow2', 'x.qcow2']) {
      await sameOutput(d.dir, 'qemu-img', ['info', file]);
      await sameOutput(d.dir, 'qemu-img', ['info', '--output=json', file]);
      await sameOutput(d.dir, 'qemu-img', ['map', file]);
      await sameOutput(d.dir, 'qemu-img', ['map', '--output=json', file]);
    }
    await sameOutput(d.dir, 'qemu-img', ['info', '--backing-chain', 'b.qcow2']);
    await sameOutput(d.dir, 'qemu-img', ['info', '--backing-chain', '--output=json', 'b.qcow2']);
    await sameOutput(d.dir, 'qemu-img', ['map', '--output=json', '--start-offset=1M', '--max-length=1M', 'b.qcow2']);
    await sameOutput(d.dir, 'qemu-img', ['info', '-f', 'raw', 'b.qcow2']);
  } finally {
    d.cleanup();
  }
});
