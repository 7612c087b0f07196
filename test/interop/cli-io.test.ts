import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qcow2Available, qemu, tempDir, vdisk } from './cli-oracle.js';

/**
 * Runs the same qemu-io command list on two copies of an image, through
 * qemu-io and through `vdisk io`, and compares output, exit status and the
 * resulting data.
 */
async function sameSession(image: { create: readonly string[]; name: string }, options: readonly string[], commands: readonly string[]): Promise<void> {
  const q = tempDir();
  const v = tempDir();
  try {
    qemu('qemu-img', q.dir, ['create', '-q', ...image.create]);
    copyFileSync(join(q.dir, image.name), join(v.dir, image.name));
    const cargs = commands.flatMap((c) => ['-c', c]);
    const expected = normalised(qemu('qemu-io', q.dir, [...options, ...cargs, image.name]));
    const actual = normalised(await vdisk(v.dir, ['io', ...options, ...cargs, image.name]));
    assert.deepEqual(actual, expected, `vdisk io ${[...options, ...cargs].join(' ')}`);
    // Both images now hold the same guest data.
    const cmp = qemu('qemu-img', q.dir, ['compare', '-q', ...(options.includes('raw') ? ['-f', 'raw', '-F', 'raw'] : []), join(q.dir, image.name), join(v.dir, image.name)]);
    assert.equal(cmp.status, 0, `data differs after ${commands.join('; ')}: ${cmp.stdout}${cmp.stderr}`);
  } finally {
    q.cleanup();
    v.cleanup();
  }
}

const RAW = { create: ['-f', 'raw', 'd.img', '4M'], name: 'd.img' };
const QCOW2 = { create: ['-f', 'qcow2', 'd.qcow2', '4M'], name: 'd.qcow2' };

test('io write, read -v, read -P and pattern failures print what qemu-io prints', async () => {
  await sameSession(RAW, ['-f', 'raw'], [
    'write -P 0x41 0 4k',
    'read -v 0 48',
    'read -P 0x41 0 4k',
    'read -P 0x42 0 4k',
    'read -q 0 512',
    'write -P 0x12 -q 1 3',
    'read -v 0 5',
    'read -v 1000 40',
    'write 64k 1k',
    'read -P 0xcd -s 1 -l 100 64k 1k',
    'readv 0 512 512',
    'writev -P 3 8k 512 512',
    'aio_write -P 5 16k 4k',
    'aio_flush',
    'aio_read -P 5 16k 4k',
    'flush',
  ]);
});

test('io reports bad input and failed requests as qemu-io does, and exits 1', async () => {
  await sameSession(RAW, ['-f', 'raw'], ['read 4M 1', 'read 0 1']);
  await sameSession(RAW, ['-f', 'raw'], ['write 4M 512']);
  await sameSession(RAW, ['-f', 'raw'], ['read x 1']);
  await sameSession(RAW, ['-f', 'raw'], ['read -P 300 0 1']);
  await sameSession(RAW, ['-f', 'raw'], ['bogus']);
  await sameSession(RAW, ['-f', 'raw'], ['read 0']);
  await sameSession(RAW, ['-f', 'raw'], ['write -z -P 1 0 4k']);
  await sameSession(RAW, ['-f', 'raw'], ['write -u 0 4k']);
  await sameSession(RAW, ['-f', 'raw', '-r'], ['write 0 1']);
  await sameSession(RAW, ['-f', 'raw'], ['help read']);
  await sameSession(RAW, ['-f', 'raw'], ['alloc 0 100']);
  await sameSession(RAW, ['-f', 'raw'], ['write -f -c 0 64k', 'write -n 0 4k', 'write -q', 'discard -q 0 8M', 'alloc 1 512', 'truncate x', 'length 1']);
  await sameSession(RAW, ['-f', 'raw'], ['read -l 4 0 512', 'read -P 1 -l 600 0 512', 'write -c -z 0 64k']);
});

test('io length, info, alloc, map, discard and write -z on raw match qemu-io', async () => {
  await sameSession(RAW, ['-f', 'raw'], ['length', 'info', 'alloc 0', 'alloc 0 1M', 'alloc 4M', 'map', 'write -z 64k 64k', 'write -z -u 128k 64k', 'discard 0 64k', 'truncate 8M', 'length']);
});

test('io without -f warns that raw was probed, as qemu-io does', async () => {
  await sameSession(RAW, [], ['read 0 512']);
});

test('io opening a missing file fails as qemu-io does', async () => {
  const t = tempDir();
  try {
    assert.deepEqual(normalised(await vdisk(t.dir, ['io', '-c', 'read 0 1', 'missing.img'])), normalised(qemu('qemu-io', t.dir, ['-c', 'read 0 1', 'missing.img'])));
  } finally {
    t.cleanup();
  }
});

test('io on qcow2 matches qemu-io, including compressed writes, alloc and map', async (t) => {
  if (!(await qcow2Available())) {
    t.skip('qcow2 driver not registered in this build');
    return;
  }
  await sameSession(QCOW2, [], [
    'write -P 0x41 0 4k',
    'read -P 0x41 0 4k',
    'alloc 0',
    'alloc 0 128k',
    'alloc 64k 1M',
    'map',
    'length',
    'info',
    'write -c 1M 64k',
    'write -c 2M 4k',
    'discard 0 64k',
    'write -z 64k 64k',
    'map',
    'truncate 8M',
    'length',
  ]);
});
