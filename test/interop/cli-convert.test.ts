import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qcow2Available, qemu, tempDir, vdisk } from './cli-oracle.js';

function same(dir: string, a: string, b: string, formats: readonly string[] = []): void {
  const r = qemu('qemu-img', dir, ['compare', ...formats, a, b]);
  assert.equal(r.status, 0, `${a} and ${b} differ: ${r.stdout}${r.stderr}`);
}

/** A raw source with data, a zero-filled data run and holes. */
function rawSource(dir: string): void {
  qemu('qemu-img', dir, ['create', '-q', '-f', 'raw', 's.img', '8M']);
  qemu('qemu-io', dir, ['-f', 'raw', '-c', 'write -P 1 64k 64k', '-c', 'write -P 2 3M 1k', '-c', 'write -z 5M 1M', '-c', 'write -P 0 6M 64k', 'r', 's.img']);
}

test('convert raw to raw copies the data and leaves the holes sparse', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    const r = await vdisk(t.dir, ['convert', '-f', 'raw', '-O', 'raw', 's.img', 'd.img']);
    assert.deepEqual(r, { stdout: '', stderr: '', status: 0 });
    same(t.dir, 's.img', 'd.img', ['-f', 'raw', '-F', 'raw']);
    assert.equal(statSync(join(t.dir, 'd.img')).size, 8 * 1024 * 1024);
    // Only the 64 KiB and 1 KiB (one 4 KiB block) of data are allocated, as qemu-img's own copy does.
    qemu('qemu-img', t.dir, ['convert', '-f', 'raw', '-O', 'raw', 's.img', 'q.img']);
    assert.equal(statSync(join(t.dir, 'd.img')).blocks, statSync(join(t.dir, 'q.img')).blocks);
  } finally {
    t.cleanup();
  }
});

test('convert -p prints qemu-img progress lines ending with 100% and a newline', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    const r = await vdisk(t.dir, ['convert', '-p', '-f', 'raw', '-O', 'raw', 's.img', 'd.img']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^    \(0\.00\/100%\)\r/);
    assert.match(r.stdout, /    \(100\.00\/100%\)\r\n$/);
    for (const line of r.stdout.split('\r').slice(0, -1)) assert.match(line, /^    \(\d{1,3}\.\d\d\/100%\)$/);
    const q = await vdisk(t.dir, ['convert', '-p', '-q', '-f', 'raw', '-O', 'raw', 's.img', 'e.img']);
    assert.equal(q.stdout, '');
  } finally {
    t.cleanup();
  }
});

test('convert -n into an existing image overwrites it, zeroing what the source has as holes', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'd.img', '8M']);
    qemu('qemu-io', t.dir, ['-f', 'raw', '-c', 'write -P 9 0 8M', 'd.img']);
    const r = await vdisk(t.dir, ['convert', '-n', '-f', 'raw', '-O', 'raw', 's.img', 'd.img']);
    assert.equal(r.status, 0, r.stderr);
    same(t.dir, 's.img', 'd.img', ['-f', 'raw', '-F', 'raw']);
  } finally {
    t.cleanup();
  }
});

test('convert of several sources concatenates them', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    qemu('qemu-img', t.dir, ['convert', '-f', 'raw', '-O', 'raw', 's.img', 's.img', 'q.img']);
    const r = await vdisk(t.dir, ['convert', '-f', 'raw', '-O', 'raw', 's.img', 's.img', 'd.img']);
    assert.equal(r.status, 0, r.stderr);
    same(t.dir, 'q.img', 'd.img', ['-f', 'raw', '-F', 'raw']);
  } finally {
    t.cleanup();
  }
});

test('convert errors match qemu-img', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    for (const argv of [
      ['convert', '-O', 'raw', 'missing.img', 'x.img'],
      ['convert', '-O', 'raw', 's.img'],
      ['convert', '-O', 'raw', '-o', 'help'],
      ['convert', '-O', 'qcow2', '-B', 's.img', 's.img', 'x.qcow2'],
    ]) {
      assert.deepEqual(normalised(await vdisk(t.dir, argv)), normalised(qemu('qemu-img', t.dir, argv)), argv.join(' '));
    }
  } finally {
    t.cleanup();
  }
});

test('convert between qcow2 and raw both ways gives images qemu-img compares equal', async (t) => {
  if (!(await qcow2Available())) {
    t.skip('qcow2 driver not registered in this build');
    return;
  }
  const d = tempDir();
  try {
    rawSource(d.dir);
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M']);
    qemu('qemu-io', d.dir, ['-c', 'write -P 4 0 1M', 'base.qcow2']);
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
    qemu('qemu-io', d.dir, ['-c', 'write -P 5 512k 64k', '-c', 'write -z 2M 64k', '-c', 'write -c -P 6 4M 64k', 'top.qcow2']);
    for (const argv of [
      ['-f', 'raw', '-O', 'qcow2', 's.img', 'a.qcow2'],
      ['-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4k', 's.img', 'b.qcow2'],
      ['-f', 'raw', '-O', 'qcow2', '-c', 's.img', 'c.qcow2'],
      ['-O', 'raw', 'top.qcow2', 'top.raw'],
      ['-O', 'qcow2', 'top.qcow2', 'flat.qcow2'],
    ]) {
      const r = await vdisk(d.dir, ['convert', ...argv]);
      assert.equal(r.status, 0, `${argv.join(' ')}: ${r.stderr}`);
      same(d.dir, argv[argv.length - 2] ?? '', argv[argv.length - 1] ?? '');
      const target = argv[argv.length - 1] ?? '';
      if (target.endsWith('.qcow2')) assert.equal(qemu('qemu-img', d.dir, ['check', target]).status, 0, `check ${target}`);
    }
    const r = await vdisk(d.dir, ['convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', 'rebased.qcow2']);
    assert.equal(r.status, 0, r.stderr);
    same(d.dir, 'top.qcow2', 'rebased.qcow2');
    // Same allocation as qemu-img's own conversion.
    qemu('qemu-img', d.dir, ['convert', '-f', 'raw', '-O', 'qcow2', 's.img', 'q.qcow2']);
    assert.equal(qemu('qemu-img', d.dir, ['map', '--output=json', 'a.qcow2']).stdout.replace(/, "offset": \d+/g, ''), qemu('qemu-img', d.dir, ['map', '--output=json', 'q.qcow2']).stdout.replace(/, "offset": \d+/g, ''));
  } finally {
    d.cleanup();
  }
});

test('convert -p prints the same progress bytes as qemu-img', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    const q = qemu('qemu-img', t.dir, ['convert', '-p', '-f', 'raw', '-O', 'raw', 's.img', 'q.img']);
    const v = await vdisk(t.dir, ['convert', '-p', '-f', 'raw', '-O', 'raw', 's.img', 'v.img']);
    assert.equal(v.status, 0, v.stderr);
    // The intermediate steps depend on each tool's chunking; the start and the end are fixed.
    assert.equal(v.stdout.slice(0, 16), q.stdout.slice(0, 16));
    assert.equal(v.stdout.slice(-37), q.stdout.slice(-37));
  } finally {
    t.cleanup();
  }
});
