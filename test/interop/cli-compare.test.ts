import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

async function sameAsQemu(dir: string, argv: readonly string[]): Promise<void> {
  const q = normalised(qemu('qemu-img', dir, argv));
  const v = normalised(await vdisk(dir, argv));
  assert.deepEqual(v, q, argv.join(' '));
}

test('compare matches qemu-img on identical, different, resized and missing images', async () => {
  const t = tempDir();
  try {
    const img = (args: string[]): void => void qemu('qemu-img', t.dir, ['create', '-q', ...args]);
    const io = (file: string, fmt: string, ...cmds: string[]): void => void qemu('qemu-io', t.dir, ['-f', fmt, ...cmds.flatMap((c) => ['-c', c]), file]);
    img(['-f', 'raw', 'a.img', '4M']);
    io('a.img', 'raw', 'write -P 1 64k 64k', 'write -P 2 3M 4k');
    img(['-f', 'qcow2', 'a.qcow2', '4M']);
    io('a.qcow2', 'qcow2', 'write -P 1 64k 64k', 'write -P 2 3M 4k', 'write -z 1M 64k');
    img(['-f', 'qcow2', 'b.qcow2', '4M']);
    io('b.qcow2', 'qcow2', 'write -P 1 64k 64k', 'write -P 2 3M 4k', 'write -P 3 3M 1536');
    img(['-f', 'qcow2', 'c.qcow2', '4M']);
    io('c.qcow2', 'qcow2', 'write -P 1 64k 64k');
    img(['-f', 'raw', 'big.img', '6M']);
    io('big.img', 'raw', 'write -P 1 64k 64k', 'write -P 2 3M 4k');
    img(['-f', 'raw', 'bigger.img', '6M']);
    io('bigger.img', 'raw', 'write -P 1 64k 64k', 'write -P 2 3M 4k', 'write -P 7 5M 512');
    img(['-f', 'qcow2', '-b', 'c.qcow2', '-F', 'qcow2', 'top.qcow2']);
    io('top.qcow2', 'qcow2', 'write -P 2 3M 4k');
    for (const argv of [
      ['compare', 'a.img', 'a.qcow2'],
      ['compare', '-f', 'raw', '-F', 'qcow2', 'a.img', 'a.qcow2'],
      ['compare', 'a.qcow2', 'b.qcow2'],
      ['compare', 'a.qcow2', 'c.qcow2'],
      ['compare', 'c.qcow2', 'a.img'],
      ['compare', '-q', 'a.qcow2', 'b.qcow2'],
      ['compare', 'a.img', 'big.img'],
      ['compare', 'bigger.img', 'a.qcow2'],
      ['compare', '-s', 'a.img', 'big.img'],
      ['compare', 'top.qcow2', 'a.img'],
      ['compare', 'a.img'],
      ['compare', 'a.img', 'missing.img'],
      ['compare', '-f', 'foo', 'a.img', 'a.img'],
    ]) {
      await sameAsQemu(t.dir, argv);
    }
  } finally {
    t.cleanup();
  }
});

test('compare -s reports the first block status mismatch like qemu-img', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'x.qcow2', '1M']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'y.qcow2', '1M']);
    qemu('qemu-io', t.dir, ['-c', 'write -P 0 128k 64k', 'y.qcow2']);
    await sameAsQemu(t.dir, ['compare', '-s', 'x.qcow2', 'y.qcow2']);
    await sameAsQemu(t.dir, ['compare', 'x.qcow2', 'y.qcow2']);
  } finally {
    t.cleanup();
  }
});

test('compare -p prints progress lines then a newline', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'x.img', '1M']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'y.img', '2M']);
    await sameAsQemu(t.dir, ['compare', '-p', 'x.img', 'y.img']);
    await sameAsQemu(t.dir, ['compare', '-p', 'x.img', 'missing.img']);
  } finally {
    t.cleanup();
  }
});
