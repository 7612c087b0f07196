import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { type ToolResult, normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

function infoJson(dir: string, file: string): string {
  return qemu('qemu-img', dir, ['info', '--output=json', file]).stdout.replace(/"(actual-size|filename)": [^,\n]+/g, '');
}

test('resize grows and shrinks qcow2 and raw images exactly as qemu-img does', async () => {
  const t = tempDir();
  try {
    const steps: string[][] = [
      ['resize', 'X', '2M'],
      ['resize', 'X', '+1M'],
      ['resize', 'X', '--', '-1M'],
      ['resize', '--shrink', 'X', '-512k'],
      ['resize', '-q', 'X', '+64k'],
      ['resize', '--preallocation=falloc', 'X', '+1M'],
      ['resize', '--preallocation=full', 'X', '-1k'],
      ['resize', '--preallocation=bad', 'X', '+1M'],
      ['resize', 'X', '+1x'],
      ['resize', 'X', '--', '-100M'],
      ['resize', 'X'],
      ['resize', '--shrink', 'X', '1M'],
    ];
    for (const fmt of ['qcow2', 'raw']) {
      qemu('qemu-img', t.dir, ['create', '-q', '-f', fmt, `q.${fmt}`, '1M']);
      qemu('qemu-img', t.dir, ['create', '-q', '-f', fmt, `v.${fmt}`, '1M']);
      for (const step of steps) {
        const q: { -readonly [K in keyof ToolResult]: ToolResult[K] } = normalised(qemu('qemu-img', t.dir, step.map((a) => (a === 'X' ? `q.${fmt}` : a))));
        const v = normalised(await vdisk(t.dir, step.map((a) => (a === 'X' ? `v.${fmt}` : a))));
        q.stderr = q.stderr.replaceAll(`q.${fmt}`, `v.${fmt}`);
        assert.deepEqual(v, q, `${fmt}: ${step.join(' ')}`);
        assert.equal(infoJson(t.dir, `v.${fmt}`), infoJson(t.dir, `q.${fmt}`), `${fmt}: ${step.join(' ')}`);
      }
      if (fmt === 'qcow2') assert.equal(qemu('qemu-img', t.dir, ['check', 'v.qcow2']).status, 0);
    }
    const missing = ['resize', 'missing.qcow2', '1M'];
    assert.deepEqual(normalised(await vdisk(t.dir, missing)), normalised(qemu('qemu-img', t.dir, missing)));
  } finally {
    t.cleanup();
  }
});

test('resize --shrink keeps the data below the new end', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '4M']);
    qemu('qemu-io', t.dir, ['-c', 'write -P 7 0 1M', '-c', 'write -P 8 3M 1M', 'a.qcow2']);
    const r = await vdisk(t.dir, ['resize', '--shrink', 'a.qcow2', '2M']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(qemu('qemu-io', t.dir, ['-c', 'read -P 7 0 1M', 'a.qcow2']).status, 0);
    assert.equal(qemu('qemu-img', t.dir, ['check', 'a.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});

test('resize --shrink drops the refcount blocks that count nothing any more and ends the file where qemu-img ends it', async () => {
  const t = tempDir();
  try {
    // 512 B clusters with 64-bit refcounts: a refcount block counts 32 KiB, so the 4 MiB written
    // near the end needs 128 blocks of its own, which count nothing once the shrink freed it.
    for (const tool of ['q', 'v']) {
      qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64', `${tool}.qcow2`, '64M']);
      qemu('qemu-io', t.dir, ['-c', 'write -P 1 0 1M', '-c', 'write -P 2 60M 4M', `${tool}.qcow2`]);
    }
    assert.equal(qemu('qemu-img', t.dir, ['resize', '-q', '--shrink', 'q.qcow2', '2M']).status, 0);
    const r = await vdisk(t.dir, ['resize', '-q', '--shrink', 'v.qcow2', '2M']);
    assert.deepEqual(r, { stdout: '', stderr: '', status: 0 });
    const checkOf = (file: string): { 'image-end-offset': number; leaks?: number; corruptions?: number } =>
      JSON.parse(qemu('qemu-img', t.dir, ['check', '--output=json', file]).stdout) as { 'image-end-offset': number };
    const [q, v] = [checkOf('q.qcow2'), checkOf('v.qcow2')];
    assert.equal(v.corruptions ?? 0, 0);
    assert.equal(v.leaks ?? 0, 0);
    assert.equal(v['image-end-offset'], q['image-end-offset']);
    assert.equal(statSync(join(t.dir, 'v.qcow2')).size, statSync(join(t.dir, 'q.qcow2')).size, 'the file ends where qemu-img ends it');
    assert.equal(qemu('qemu-img', t.dir, ['compare', 'q.qcow2', 'v.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});
