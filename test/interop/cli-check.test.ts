import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, openSync, readSync, writeSync, closeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

/** A qcow2 image with one data cluster and two leaked clusters (refcount 1, unreferenced) past its end. */
function leakyImage(dir: string, name: string): void {
  qemu('qemu-img', dir, ['create', '-q', '-f', 'qcow2', name, '1M']);
  qemu('qemu-io', dir, ['-c', 'write 0 64k', name]);
  const fd = openSync(join(dir, name), 'r+');
  try {
    const b = Buffer.alloc(8);
    readSync(fd, b, 0, 8, 48);
    readSync(fd, b, 0, 8, Number(b.readBigUInt64BE(0)));
    const block = Number(b.readBigUInt64BE(0));
    writeSync(fd, Buffer.from([0, 1, 0, 1]), 0, 4, block + 2 * 6);
    ftruncateSync(fd, 8 * 65536);
  } finally {
    closeSync(fd);
  }
}

async function sameAsQemu(dir: string, argv: readonly string[], prepare?: () => void): Promise<void> {
  prepare?.();
  const q = normalised(qemu('qemu-img', dir, argv));
  prepare?.();
  const v = normalised(await vdisk(dir, argv));
  assert.deepEqual(v, q, argv.join(' '));
}

test('check of clean qcow2 and raw images prints what qemu-img prints, with its exit codes', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    qemu('qemu-io', t.dir, ['-c', 'write 0 64k', '-c', 'write -c 128k 64k', 'a.qcow2']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    for (const argv of [
      ['check', 'a.qcow2'],
      ['check', '--output=json', 'a.qcow2'],
      ['check', '-q', 'a.qcow2'],
      ['check', '-U', 'a.qcow2'],
      ['check', 'r.img'],
      ['check', '-f', 'raw', '--output=json', 'r.img'],
      ['check', 'missing.qcow2'],
      ['check'],
      ['check', '-r', 'some', 'a.qcow2'],
      ['check', '--output=xml', 'a.qcow2'],
      ['check', '-r', 'leaks', '-U', 'a.qcow2'],
    ]) {
      await sameAsQemu(t.dir, argv);
    }
  } finally {
    t.cleanup();
  }
});

test('check reports leaks with exit 3 and leaves the image unchanged', async () => {
  const t = tempDir();
  try {
    leakyImage(t.dir, 'l.qcow2');
    copyFileSync(join(t.dir, 'l.qcow2'), join(t.dir, 'orig.qcow2'));
    await sameAsQemu(t.dir, ['check', 'l.qcow2']);
    await sameAsQemu(t.dir, ['check', '--output=json', 'l.qcow2']);
    assert.equal(qemu('qemu-img', t.dir, ['compare', '-s', 'l.qcow2', 'orig.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});

test('check -r leaks and -r all repair, double-check and keep the fixed counts like qemu-img', async () => {
  const t = tempDir();
  try {
    const prepare = (): void => leakyImage(t.dir, 'l.qcow2');
    await sameAsQemu(t.dir, ['check', '-r', 'leaks', 'l.qcow2'], prepare);
    await sameAsQemu(t.dir, ['check', '-r', 'all', '--output=json', 'l.qcow2'], prepare);
    prepare();
    assert.equal((await vdisk(t.dir, ['check', '-r', 'all', 'l.qcow2'])).status, 0);
    assert.equal(qemu('qemu-img', t.dir, ['check', 'l.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});

test('check and info name ploop images "parallels" as qemu-img does, with -f parallels or -f ploop', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'parallels', 'p.hds', '4M']);
    qemu('qemu-io', t.dir, ['-f', 'parallels', '-c', 'write -P 1 1M 64k', 'p.hds']);
    await sameAsQemu(t.dir, ['check', 'p.hds']);
    await sameAsQemu(t.dir, ['check', '--output=json', '-f', 'parallels', 'p.hds']);
    const v = await vdisk(t.dir, ['check', '--output=json', '-f', 'ploop', 'p.hds']);
    assert.match(v.stdout, /"format": "parallels"/);
    assert.match((await vdisk(t.dir, ['info', 'p.hds'])).stdout, /^file format: parallels$/m);
  } finally {
    t.cleanup();
  }
});
