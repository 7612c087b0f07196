import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

/** Runs `dd` with `of=q-<out>` through qemu-img and `of=v-<out>` through vdisk; expects the same output, status and file. */
async function sameAsQemu(dir: string, argv: readonly string[], out: string): Promise<void> {
  const q = normalised(qemu('qemu-img', dir, ['dd', ...argv, `of=q-${out}`]));
  const v = normalised(await vdisk(dir, ['dd', ...argv, `of=v-${out}`]));
  assert.deepEqual(v, q, `dd ${argv.join(' ')}`);
  const qPath = join(dir, `q-${out}`);
  const vPath = join(dir, `v-${out}`);
  assert.equal(existsSync(vPath), existsSync(qPath), `dd ${argv.join(' ')}: output created`);
  if (!existsSync(qPath)) return;
  const fmt = argv.includes('-O') ? argv[argv.indexOf('-O') + 1] ?? 'raw' : 'raw';
  if (fmt === 'raw') assert.deepEqual(readFileSync(vPath), readFileSync(qPath), `dd ${argv.join(' ')}: content`);
  const c = qemu('qemu-img', dir, ['compare', '-f', fmt, '-F', fmt, qPath, vPath]);
  assert.equal(c.status, 0, `dd ${argv.join(' ')}: ${c.stdout}${c.stderr}`);
  if (fmt === 'raw') assert.equal(statSync(vPath).size, statSync(qPath).size);
}

test('dd copies the blocks qemu-img dd copies, for bs, count, skip and -O', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 's.raw', '1M']);
    qemu('qemu-io', t.dir, ['-f', 'raw', '-c', 'write -P 7 0 300k', '-c', 'write -P 9 700k 1000', 's.raw']);
    qemu('qemu-img', t.dir, ['convert', '-f', 'raw', '-O', 'qcow2', 's.raw', 's.qcow2']);
    const cases: ReadonlyArray<readonly string[]> = [
      ['if=s.raw'],
      ['if=s.raw', 'bs=4k', 'count=10', 'skip=4'],
      ['if=s.raw', 'bs=1000', 'count=3', 'skip=1'],
      ['if=s.raw', 'bs=4k', 'count=0'],
      ['if=s.raw', 'bs=4k', 'skip=300'],
      ['if=s.raw', 'bs=1000', 'skip=5000'],
      ['if=s.raw', 'bs=64k', 'count=1k'],
      ['-f', 'qcow2', 'if=s.qcow2', 'bs=3000', 'skip=100'],
      ['if=s.qcow2', '-O', 'qcow2', 'bs=64k', 'count=12'],
      ['-U', 'if=s.raw', 'bs=1M'],
    ];
    for (const [i, argv] of cases.entries()) await sameAsQemu(t.dir, argv, `o${i}`);
  } finally {
    t.cleanup();
  }
});

test('dd errors match qemu-img and create nothing', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 's.raw', '64k']);
    const cases: ReadonlyArray<readonly string[]> = [
      ['if=s.raw', 'foo=1'],
      ['if=s.raw', 'ifx'],
      ['bs=0', 'if=s.raw'],
      ['if=s.raw', 'bs=abc'],
      ['if=s.raw', 'count=abc'],
      ['if=s.raw', 'skip=-1'],
      ['if=s.raw', 'bs=3G'],
      ['if=nofile'],
      ['if=s.raw', '-O', 'vmdkx'],
      ['-f', 'qcow2', 'if=s.raw'],
    ];
    for (const [i, argv] of cases.entries()) await sameAsQemu(t.dir, argv, `e${i}`);
    const q = normalised(qemu('qemu-img', t.dir, ['dd', 'if=s.raw']));
    assert.deepEqual(normalised(await vdisk(t.dir, ['dd', 'if=s.raw'])), q);
    const q2 = normalised(qemu('qemu-img', t.dir, ['dd', 'if=s.raw', 'of=/nonexistent-dir/x']));
    assert.deepEqual(normalised(await vdisk(t.dir, ['dd', 'if=s.raw', 'of=/nonexistent-dir/x'])), q2);
  } finally {
    t.cleanup();
  }
});
