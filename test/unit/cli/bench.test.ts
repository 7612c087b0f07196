/** `vdisk bench` against `qemu-img bench`: same lines (timing aside), same checks, same image afterwards. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { run } from '../../../src/cli/program.js';

async function vdisk(argv: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await run(argv, { out: { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) } });
  return { status, stdout, stderr };
}

function qemu(argv: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('qemu-img', argv, { encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const noTime = (s: string): string => s.replace(/Run completed in [0-9.]+ seconds/, 'Run completed in T seconds');

test('bench prints what qemu-img bench prints and leaves the same image', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-'));
  try {
    const a = path.join(dir, 'a.qcow2');
    const b = path.join(dir, 'b.qcow2');
    for (const f of [a, b]) qemu(['create', '-q', '-f', 'qcow2', f, '4M']);
    const args = ['bench', '-w', '-c', '300', '-d', '8', '-o', '512', '-S', '5000', '--pattern=0x5a', '--flush-interval=16', '-f', 'qcow2'];
    const v = await vdisk([...args, a]);
    const q = qemu([...args, b]);
    assert.equal(v.status, 0, v.stderr);
    assert.equal(noTime(v.stdout), noTime(q.stdout));
    assert.equal(qemu(['compare', a, b]).status, 0, 'same content');
    assert.equal(qemu(['check', a]).status, 0, 'checks clean');
    const r = await vdisk(['bench', '-c', '50', '-d', '4', '-t', 'none', a]);
    assert.equal(noTime(r.stdout), noTime(qemu(['bench', '-c', '50', '-d', '4', '-t', 'none', b]).stdout));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('bench refuses what qemu-img bench refuses', async () => {
  const cases = [
    ['bench', '--flush-interval=8', 'x.qcow2'],
    ['bench', '-w', '-d', '16', '--flush-interval=8', 'x.qcow2'],
    ['bench', '-c', 'abc', 'x.qcow2'],
    ['bench', '--pattern=300', 'x.qcow2'],
    ['bench', '-t', 'bogus', 'x.qcow2'],
  ];
  for (const argv of cases) {
    const v = await vdisk(argv);
    const q = qemu(argv);
    assert.equal(v.status, 1, argv.join(' '));
    assert.equal(q.status, 1);
    assert.equal(v.stderr.replace(/^vdisk: /, ''), q.stderr.replace(/^qemu-img: /, ''), argv.join(' '));
  }
});
