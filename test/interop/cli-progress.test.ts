import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qcow2Available, qemu, tempDir, vdisk } from './cli-oracle.js';

interface ProgressLine {
  readonly phase: string;
  readonly done: number;
  readonly total: number;
  readonly elapsed: number;
}

function progressLines(stderr: string): ProgressLine[] {
  const lines = stderr.split('\n');
  assert.equal(lines.pop(), '', 'the JSON lines end with a newline');
  return lines.map((l) => JSON.parse(l) as ProgressLine);
}

/** Checks the lines are one phase, done grows from 0 to total, elapsed never goes back. */
function assertWellFormed(lines: readonly ProgressLine[], phase: string): void {
  assert.ok(lines.length >= 2, `at least a start and an end line: ${JSON.stringify(lines)}`);
  const first = lines[0];
  const last = lines[lines.length - 1];
  assert.ok(first && last);
  assert.equal(first.done, 0);
  assert.equal(last.done, last.total);
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    assert.ok(l);
    assert.deepEqual(Object.keys(l), ['phase', 'done', 'total', 'elapsed']);
    assert.equal(l.phase, phase);
    assert.ok(Number.isInteger(l.done) && Number.isInteger(l.total) && l.done <= l.total);
    const prev = lines[i - 1];
    if (prev) assert.ok(prev.done <= l.done && prev.elapsed <= l.elapsed);
  }
}

test('convert --progress=json prints JSON lines on stderr and nothing on stdout; the image is the same', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 's.img', '8M']);
    qemu('qemu-io', t.dir, ['-f', 'raw', '-c', 'write -P 1 0 6M', 's.img']);
    const r = await vdisk(t.dir, ['convert', '--progress=json', '-f', 'raw', '-O', 'raw', 's.img', 'd.img']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, '');
    const lines = progressLines(r.stderr);
    assertWellFormed(lines, 'convert');
    assert.ok(lines.length > 2, 'intermediate lines for a multi-chunk copy');
    assert.equal(qemu('qemu-img', t.dir, ['compare', '-f', 'raw', '-F', 'raw', 's.img', 'd.img']).status, 0);
    const bad = await vdisk(t.dir, ['convert', '--progress=yaml', '-f', 'raw', '-O', 'raw', 's.img', 'e.img']);
    assert.deepEqual(bad, { stdout: '', stderr: "vdisk: Invalid progress mode: 'yaml' (use 'text' or 'json')\n", status: 1 });
  } finally {
    t.cleanup();
  }
});

test('commit, rebase, compare and check -r report JSON progress with their phase names', async (ctx) => {
  if (!(await qcow2Available())) return ctx.skip('qcow2 driver not present');
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'b.qcow2', '4M']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', 't.qcow2']);
    qemu('qemu-io', t.dir, ['-c', 'write -P 7 0 3M', 't.qcow2']);
    const cmp = await vdisk(t.dir, ['compare', '--progress=json', 'b.qcow2', 't.qcow2']);
    assert.equal(cmp.status, 1);
    assert.equal(cmp.stdout, 'Content mismatch at offset 0!\n');
    assert.equal(progressLines(cmp.stderr)[0]?.phase, 'compare');
    const chk = await vdisk(t.dir, ['check', '-r', 'leaks', '--progress=json', 't.qcow2']);
    assert.equal(chk.status, 0, chk.stderr);
    assertWellFormed(progressLines(chk.stderr), 'check');
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'n.qcow2', '4M']);
    const reb = await vdisk(t.dir, ['rebase', '--progress=json', '-b', 'n.qcow2', '-F', 'qcow2', 't.qcow2']);
    assert.equal(reb.status, 0, reb.stderr);
    assert.equal(reb.stdout, '');
    assertWellFormed(progressLines(reb.stderr), 'rebase');
    const com = await vdisk(t.dir, ['commit', '--progress=json', 't.qcow2']);
    assert.equal(com.status, 0, com.stderr);
    assert.equal(com.stdout, 'Image committed.\n');
    assertWellFormed(progressLines(com.stderr), 'commit');
    assert.equal(qemu('qemu-img', t.dir, ['compare', 'n.qcow2', 't.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});
