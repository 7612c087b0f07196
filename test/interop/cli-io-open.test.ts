import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { run } from '../../src/cli/program.js';
import { normalise, qcow2Available, qemu, tempDir, type ToolResult } from './cli-oracle.js';

/** qemu-io with no file, reading `script` from stdin. */
function qemuIoSession(cwd: string, script: readonly string[], argv: readonly string[] = []): ToolResult {
  const r = spawnSync('qemu-io', argv, { cwd, encoding: 'utf8', input: script.map((l) => `${l}\n`).join('') });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status ?? (r.signal === 'SIGABRT' ? 134 : -1) };
}

/** vdisk io with the same lines as its stdin. */
async function vdiskIoSession(cwd: string, script: readonly string[], argv: readonly string[] = []): Promise<ToolResult> {
  let stdout = '';
  let stderr = '';
  const saved = process.cwd();
  process.chdir(cwd);
  try {
    const status = await run(['io', ...argv], {
      out: { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) },
      stdinLines: async function* () {
        yield* script;
      },
    });
    return { stdout, stderr, status };
  } finally {
    process.chdir(saved);
  }
}

function sameAsQemuIo(q: ToolResult, v: ToolResult): void {
  const n = (r: ToolResult): ToolResult => ({ stdout: normalise(r.stdout).replace(/qemu-io> /g, 'vdisk> '), stderr: normalise(r.stderr), status: r.status });
  assert.deepEqual(n(v), n(q));
}

test('io without a file: open, read, close, and the errors before and after, as qemu-io prints them', async (ctx) => {
  if (!(await qcow2Available())) return ctx.skip('qcow2 driver not present');
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'x.qcow2', '1M']);
    qemu('qemu-io', t.dir, ['-c', 'write -P 9 0 4k', 'x.qcow2']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    const script = [
      'read 0 512', 'open -f qcow2 x.qcow2', 'open', 'open -o driver=qcow2 x.qcow2', 'open x.qcow2',
      'read -P 9 0 4k', 'length', 'close', 'close', 'read 0 1', 'sleep 1', 'open -n nosuch', 'open -t bogus r.img',
      'open -d bad r.img', 'open -o driver=raw,bogus=1 r.img', 'open -r r.img', 'write 0 1', 'close',
      'open -U r.img', 'open -n -t writeback -o driver=raw r.img', 'write -P 3 0 1', 'close', 'help close', 'help open', 'quit',
    ];
    const q = qemuIoSession(t.dir, script);
    const v = await vdiskIoSession(t.dir, script);
    sameAsQemuIo(q, v);
  } finally {
    t.cleanup();
  }
});

test('io reopen switches between read-only and read-write and checks its options as qemu-io does', async (ctx) => {
  if (!(await qcow2Available())) return ctx.skip('qcow2 driver not present');
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'x.qcow2', '1M']);
    const script = [
      'reopen -r', 'write -P 1 0 1k', 'reopen -w', 'write -P 2 0 1k', 'reopen -c bogus', 'reopen -r -w', 'reopen -x',
      'reopen extra', 'reopen -c none -o lazy-refcounts=on', 'read -P 2 0 1k', 'help reopen', 'quit',
    ];
    const q = qemuIoSession(t.dir, script, ['-f', 'qcow2', 'x.qcow2']);
    const v = await vdiskIoSession(t.dir, script, ['-f', 'qcow2', 'x.qcow2']);
    sameAsQemuIo(q, v);
    assert.equal(qemu('qemu-img', t.dir, ['check', '-q', 'x.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});

test('io abort ends the session at once with the status of a SIGABRT crash', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    const script = ['open -o driver=raw r.img', 'abort', 'read 0 1'];
    const q = qemuIoSession(t.dir, script);
    const v = await vdiskIoSession(t.dir, script);
    sameAsQemuIo(q, v);
    assert.equal(v.status, 134);
  } finally {
    t.cleanup();
  }
});
