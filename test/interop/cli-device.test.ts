/**
 * Images on a block device (an LVM volume, a loop device): its size is what
 * lseek finds at its end (fstat says 0), it cannot be truncated, and what it
 * held before stays until written over. Needs root and loop devices; skipped
 * where losetup cannot attach one.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

const MiB = 1024 * 1024;

/** A loop device over a 16 MiB file in `dir`, or why there is none. */
function attachLoop(dir: string): { readonly device: string } | { readonly skip: string } {
  const backing = join(dir, 'loop.img');
  writeFileSync(backing, '');
  truncateSync(backing, 16 * MiB);
  const r = spawnSync('losetup', ['-f', '--show', backing], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return { skip: `losetup cannot attach a loop device here: ${r.error?.message ?? r.stderr.trim()}` };
  return { device: r.stdout.trim() };
}

/** Fills the device with a byte that is not zero, as a volume that held something before. */
function dirty(dir: string, device: string): void {
  assert.equal(qemu('qemu-io', dir, ['-f', 'raw', '-c', `write -P 0xff 0 ${16 * MiB}`, device]).status, 0);
}

function compare(dir: string, args: readonly string[]): void {
  const r = qemu('qemu-img', dir, ['compare', ...args]);
  assert.equal(r.status, 0, r.stdout + r.stderr);
}

test('images on a block device: size, map, converts that write the holes, qcow2 created over old contents, and no resize', async (t) => {
  const tmp = tempDir();
  const loop = attachLoop(tmp.dir);
  if ('skip' in loop) {
    tmp.cleanup();
    t.skip(loop.skip);
    return;
  }
  const dev = loop.device;
  try {
    const dir = tmp.dir;
    qemu('qemu-img', dir, ['create', '-q', '-f', 'qcow2', 's.qcow2', '16M']);
    qemu('qemu-io', dir, ['-f', 'qcow2', '-c', 'write -P 0x33 0 3M', '-c', 'write -P 0x44 8M 1M', 's.qcow2']);

    // The size is the device's, every byte is data (SEEK_DATA does not apply), as qemu-img reports them.
    dirty(dir, dev);
    const info = await vdisk(dir, ['info', '--output=json', dev]);
    assert.equal(info.status, 0, info.stderr);
    assert.equal((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'], 16 * MiB);
    for (const args of [['map', '--output=json', dev], ['map', dev]]) {
      const ours = await vdisk(dir, args);
      assert.equal(ours.status, 0, ours.stderr);
      assert.equal(ours.stdout, qemu('qemu-img', dir, args).stdout);
    }

    // A raw image on a device does not start as zeros: a convert writes the source's holes too.
    for (const extra of [[], ['-n'], ['-W'], ['-t', 'none']]) {
      dirty(dir, dev);
      const r = await vdisk(dir, ['convert', ...extra, '-f', 'qcow2', '-O', 'raw', 's.qcow2', dev]);
      assert.equal(r.status, 0, `convert ${extra.join(' ')}: ${r.stderr}`);
      compare(dir, ['-f', 'qcow2', '-F', 'raw', 's.qcow2', dev]);
    }

    // qcow2 made over old contents: its metadata is written whole, and it checks clean after use.
    dirty(dir, dev);
    const created = await vdisk(dir, ['create', '-q', '-f', 'qcow2', dev, '16M']);
    assert.equal(created.status, 0, created.stderr);
    assert.equal(qemu('qemu-img', dir, ['check', dev]).status, 0);
    const converted = await vdisk(dir, ['convert', '-n', '-f', 'qcow2', '-O', 'qcow2', 's.qcow2', dev]);
    assert.equal(converted.status, 0, converted.stderr);
    const check = qemu('qemu-img', dir, ['check', dev]);
    assert.equal(check.status, 0, check.stdout + check.stderr);
    compare(dir, ['-f', 'qcow2', '-F', 'qcow2', 's.qcow2', dev]);

    // What a device cannot do, refused before anything is written and in qemu-img's words.
    const refusals: ReadonlyArray<readonly string[]> = [
      ['create', '-f', 'raw', dev, '32M'],
      ['create', '-f', 'raw', '-o', 'preallocation=full', dev, '16M'],
      ['create', '-f', 'qcow2', '-o', 'preallocation=falloc', dev, '16M'],
      ['create', '-f', 'qcow2', '-o', 'preallocation=full', dev, '16M'],
      ['resize', '-f', 'raw', '--shrink', dev, '8M'],
      ['resize', '-f', 'raw', dev, '32M'],
    ];
    for (const args of refusals) {
      const ours = normalised(await vdisk(dir, args));
      assert.notEqual(ours.status, 0, args.join(' '));
      assert.equal(qemu('qemu-img', dir, ['check', dev]).status, 0, `${args.join(' ')} left the qcow2 on the device as it was`);
      assert.deepEqual(ours, normalised(qemu('qemu-img', dir, args)), args.join(' '));
    }

    // Metadata preallocation: the clusters it maps read as zeros, not as what the device held.
    dirty(dir, dev);
    const meta = await vdisk(dir, ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', dev, '8M']);
    assert.equal(meta.status, 0, meta.stderr);
    assert.equal(qemu('qemu-img', dir, ['check', dev]).status, 0);
    assert.equal(qemu('qemu-io', dir, ['-f', 'qcow2', '-c', `read -P 0 0 ${8 * MiB}`, dev]).status, 0);
  } finally {
    execFileSync('losetup', ['-d', dev]);
    tmp.cleanup();
  }
});
