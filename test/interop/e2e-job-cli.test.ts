// `vdisk job ... --qmp PATH` against a running `vdisk serve --qmp`: start a commit, wait with progress,
// list, set-speed, complete, cancel, and the errors (exit 1, the job id named) for unknown jobs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './support/serve-process.js';
import { addExportedImage, assertImageEquals, GuestModel, MiB, ok, readImage, stopProcess, tmpDir, withDaemon, within, type E2eDaemon } from './support/e2e-daemon.js';

// The installed command (the bundle through its code cache).
const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/vdisk.cjs');
const SIZE = 16 * MiB;

interface CliResult {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `vdisk job <args> --qmp <socket>` as a child (asynchronously: the test keeps its own QMP session alive). */
async function vdiskJob(d: E2eDaemon, args: readonly string[], onStdout?: (text: string) => void): Promise<CliResult> {
  const proc = spawn(process.execPath, [MAIN, 'job', ...args, '--qmp', d.qmpPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (c: Buffer) => {
    stdout += c.toString();
    onStdout?.(stdout);
  });
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const status = await stopProcess(proc, exited, 20000);
  return { status, stdout, stderr };
}

function makeChain(dir: string): Buffer {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, String(SIZE)]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', `${dir}/base.qcow2`]);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', `${dir}/top.qcow2`]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 2M 6M', `${dir}/top.qcow2`]);
  return readImage(dir, `${dir}/top.qcow2`);
}

test('vdisk job commit, wait --ready -p, list, set-speed and complete drive an active commit of a served disk', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeChain(dir), 29);
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/top.qcow2` });
      run('qemu-io', ['-f', 'raw', ...guest.writes(10).flatMap((c) => ['-c', c]), d.uri('disk')]);
      const from = d.mark();
      // Slow enough that list and set-speed see it running.
      const start = await vdiskJob(d, ['commit', '-d', 'disk', '--job-id', 'c0', '--speed', '1M']);
      assert.equal(start.status, 0, start.stderr);
      assert.equal(start.stdout, '');

      const list = await vdiskJob(d, ['list']);
      assert.equal(list.status, 0, list.stderr);
      assert.match(list.stdout, /^c0 commit (created|running) \d+\/\d+ speed=1048576\n$/);

      const speed = await vdiskJob(d, ['set-speed', 'c0', '0']);
      assert.equal(speed.status, 0, speed.stderr);
      const wait = await vdiskJob(d, ['wait', 'c0', '--ready', '-p']);
      assert.equal(wait.status, 0, wait.stderr);
      assert.match(wait.stdout, /^ {4}\(0\.00\/100%\)\r/);
      assert.match(wait.stdout, / {4}\(100\.00\/100%\)\r\n$/);
      await d.event('BLOCK_JOB_READY', from);

      const ready = await vdiskJob(d, ['list']);
      assert.match(ready.stdout, /^c0 commit ready (\d+)\/\1 speed=0\n$/);

      const complete = await vdiskJob(d, ['complete', 'c0']);
      assert.equal(complete.status, 0, complete.stderr);
      await d.event('BLOCK_JOB_COMPLETED', from, (e) => e['device'] === 'c0');
      const after = await vdiskJob(d, ['list']);
      assert.equal(after.status, 0);
      assert.equal(after.stdout, '');
      run('qemu-io', ['-f', 'raw', ...guest.writes(10).flatMap((c) => ['-c', c]), d.uri('disk')]);
      assert.equal(await d.quit(), 0);
    });
    assertImageEquals(dir, `${dir}/base.qcow2`, guest.model);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('vdisk job commit -w returns when ready; vdisk job cancel then wait reports the cancel with exit 1', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeChain(dir), 31);
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/top.qcow2` });
      const start = await vdiskJob(d, ['commit', '-d', 'disk', '-w']);
      assert.equal(start.status, 0, start.stderr);
      const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<Record<string, unknown>>;
      assert.equal(jobs[0]?.['device'], 'disk');
      assert.equal(jobs[0]?.['ready'], true);
      const from = d.mark();
      // wait runs concurrently with the cancel and sees the job end as cancelled: its first progress
      // line past 0 shows it queried the (ready, fully copied) job, so the cancel comes after.
      let attached: () => void = () => undefined;
      const found = new Promise<void>((resolve) => (attached = resolve));
      const waiting = vdiskJob(d, ['wait', 'disk', '-p'], (out) => {
        if (out.includes('(100.00/100%)')) attached();
      });
      await within(found, 'vdisk job wait to find the job');
      const cancel = await vdiskJob(d, ['cancel', 'disk']);
      assert.equal(cancel.status, 0, cancel.stderr);
      await d.event('BLOCK_JOB_CANCELLED', from);
      const waited = await waiting;
      assert.notEqual(waited.status, 0);
      assert.match(waited.stderr, /Block job 'disk' was cancelled/);
      assert.equal(await d.quit(), 0);
    });
    assertImageEquals(dir, `${dir}/top.qcow2`, guest.model);
    run('qemu-img', ['check', `${dir}/base.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('vdisk job verbs on an unknown job id exit 1 and name the id; a missing --qmp is a usage error', async () => {
  const dir = tmpDir();
  try {
    await withDaemon(dir, async (d) => {
      for (const args of [['complete', 'nosuch'], ['cancel', 'nosuch'], ['pause', 'nosuch'], ['resume', 'nosuch'], ['set-speed', 'nosuch', '1M'], ['wait', 'nosuch']]) {
        const r = await vdiskJob(d, args);
        assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, /nosuch/, args.join(' '));
      }
      const commit = await vdiskJob(d, ['commit', '-d', 'nodisk']);
      assert.equal(commit.status, 1);
      assert.match(commit.stderr, /nodisk/);
      const list = await vdiskJob(d, ['list']);
      assert.deepEqual([list.status, list.stdout], [0, '']);
      const verb = await vdiskJob(d, ['frobnicate']);
      assert.equal(verb.status, 1);
      assert.match(verb.stderr, /frobnicate/);
    });
    const r = spawn(process.execPath, [MAIN, 'job', 'list']);
    const code = await new Promise<number | null>((resolve) => r.once('exit', resolve));
    assert.equal(code, 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
