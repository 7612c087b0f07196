import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

/** Runs one measure command line through both tools and expects identical output and status. */
async function sameAsQemu(dir: string, argv: readonly string[]): Promise<void> {
  const q = normalised(qemu('qemu-img', dir, ['measure', ...argv]));
  const v = normalised(await vdisk(dir, ['measure', ...argv]));
  assert.deepEqual(v, q, `measure ${argv.join(' ')}`);
}

const OPTION_SETS: readonly string[][] = [
  [],
  ['-o', 'preallocation=metadata'],
  ['-o', 'preallocation=full'],
  ['-o', 'preallocation=falloc'],
  ['-o', 'extended_l2=on'],
  ['-o', 'cluster_size=4k'],
  ['-o', 'cluster_size=512'],
  ['-o', 'cluster_size=2M,extended_l2=on'],
  ['-o', 'compat=0.10'],
  ['-o', 'refcount_bits=1'],
  ['-o', 'refcount_bits=64', '-o', 'cluster_size=16k'],
  ['-o', 'backing_file=x'],
];

test('measure --size matches qemu-img for qcow2 option sets and raw, text and JSON', async () => {
  const t = tempDir();
  try {
    for (const size of ['0', '1000', '1G', '100T']) {
      for (const opts of OPTION_SETS) {
        await sameAsQemu(t.dir, ['--size', size, '-O', 'qcow2', ...opts]);
      }
      await sameAsQemu(t.dir, ['--size', size, '-O', 'raw']);
      await sameAsQemu(t.dir, ['--output=json', '--size', size, '-O', 'qcow2']);
      await sameAsQemu(t.dir, ['--output=json', '--size', size, '-O', 'raw', '-o', 'preallocation=full']);
    }
  } finally {
    t.cleanup();
  }
});

test('measure of existing qcow2 and raw images matches qemu-img, including the bitmaps figure', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '100M']);
    qemu('qemu-io', t.dir, ['-c', 'write 0 1k', '-c', 'write 10M 3M', '-c', 'write -z 20M 1M', '-c', 'write 65k 1k', '-c', 'write 99M 1M', 'a.qcow2']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '10M']);
    qemu('qemu-io', t.dir, ['-f', 'raw', '-c', 'write 5k 2k', '-c', 'write 1M 64k', 'r.img']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'o.qcow2']);
    qemu('qemu-io', t.dir, ['-c', 'write 50M 1M', 'o.qcow2']);
    const run = async (): Promise<void> => {
      for (const img of [['a.qcow2'], ['-f', 'raw', 'r.img'], ['o.qcow2'], ['-U', 'o.qcow2']]) {
        for (const target of [['-O', 'qcow2'], ['-O', 'raw'], []]) {
          await sameAsQemu(t.dir, [...target, ...img]);
          await sameAsQemu(t.dir, ['--output=json', ...target, ...img]);
        }
        for (const opts of OPTION_SETS) await sameAsQemu(t.dir, ['-O', 'qcow2', ...opts, ...img]);
      }
    };
    await run();
    qemu('qemu-img', t.dir, ['bitmap', '--add', 'a.qcow2', 'b0']);
    qemu('qemu-img', t.dir, ['bitmap', '--add', '-g', '4k', 'a.qcow2', 'a-much-longer-bitmap-name']);
    await run();
  } finally {
    t.cleanup();
  }
});

test('measure errors match qemu-img', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    const cases: readonly string[][] = [
      [],
      ['--size', '1G', 'a.qcow2'],
      ['a.qcow2', 'a.qcow2'],
      ['-f', 'raw', '--size', '1G'],
      ['--size', 'abc'],
      ['--size', '1G', '-O', 'vmdk2'],
      ['--size', '1G', '-O', 'parallels'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=3k'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'foo=1'],
      ['--size', '1G', '--output=xml'],
      ['nofile'],
      ['--size', '1P', '-O', 'qcow2', '-o', 'cluster_size=512'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'preallocation=bogus'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'compat=0.10,refcount_bits=2'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'cluster_size=4k,extended_l2=on'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'refcount_bits=3'],
      ['--size', '1G', '-O', 'qcow2', '-o', 'compat=2'],
      ['--size', '1G', '-O', 'raw', '-o', 'backing_file=x'],
    ];
    for (const argv of cases) await sameAsQemu(t.dir, argv);
  } finally {
    t.cleanup();
  }
});
