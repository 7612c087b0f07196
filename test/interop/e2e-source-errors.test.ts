// EIO on a job's SOURCE through `vdisk serve --qmp`: the source is an NBD node served by nbdkit's file plugin
// behind its error filter, whose reads start failing when a trigger file appears (mid-job). The mirror fails
// with the error (on-source-error=report) or pauses with io-status failed (stop) and finishes after resume once
// the trigger is gone; the source file is never written, the target checks clean.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { run, startServer } from './support/serve-process.js';
import { assertImageEquals, MiB, ok, stopProcess, tmpDir, withDaemon, type E2eDaemon } from './support/e2e-daemon.js';

const SIZE = 8 * MiB;

function sourceBytes(): Buffer {
  const b = Buffer.alloc(SIZE);
  for (let i = 0; i < SIZE; i += 4096) b.fill((i / 4096) % 251, i, i + 4096);
  return b;
}

/** Runs `fn` with an NBD node `src` (nbdkit, reads fail with EIO while `${dir}/trigger` exists) and a qcow2 node `tgt`. */
async function withFlakySource(dir: string, fn: (d: E2eDaemon) => Promise<void>): Promise<void> {
  fs.writeFileSync(`${dir}/src.raw`, sourceBytes());
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/tgt.qcow2`, String(SIZE)]);
  const sock = `${dir}/src.sock`;
  const src = await startServer(
    ['nbdkit', '-f', '-U', sock, '--filter=error', 'file', `${dir}/src.raw`, 'error-pread=EIO', 'error-pread-rate=1', `error-pread-file=${dir}/trigger`],
    sock,
    { probe: true },
  );
  try {
    await withDaemon(dir, async (d) => {
      ok(await d.qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': 'src', server: { type: 'unix', path: sock } }));
      ok(await d.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'tgt', file: { driver: 'file', filename: `${dir}/tgt.qcow2` } }));
      await fn(d);
    });
  } finally {
    src.proc.kill('SIGTERM');
    await stopProcess(src.proc, src.exited);
  }
}

/** Starts a slow mirror of src into tgt and makes the source fail once the copy is under way. */
async function startThenFail(d: E2eDaemon, dir: string, policy: 'report' | 'stop'): Promise<number> {
  const from = d.mark();
  ok(await d.qmp.execute('blockdev-mirror', { device: 'src', 'job-id': 'm', target: 'tgt', sync: 'full', speed: 4 * MiB, 'on-source-error': policy, 'auto-dismiss': false }));
  await d.event('JOB_STATUS_CHANGE', from, (e) => e['status'] === 'running');
  fs.writeFileSync(`${dir}/trigger`, '');
  return from;
}

test('a mirror whose source starts failing reads with EIO fails with "Input/output error"; the source is untouched, the target checks clean', async () => {
  const dir = tmpDir();
  try {
    await withFlakySource(dir, async (d) => {
      const from = await startThenFail(d, dir, 'report');
      const error = (await d.event('BLOCK_JOB_ERROR', from))['data'] as Record<string, unknown>;
      assert.deepEqual(error, { device: 'm', operation: 'read', action: 'report' });
      const done = (await d.event('BLOCK_JOB_COMPLETED', from))['data'] as Record<string, unknown>;
      assert.equal(done['error'], 'Input/output error');
      const jobs = ok(await d.qmp.execute('query-jobs')) as Array<{ status: string; error?: string }>;
      assert.deepEqual([jobs[0]?.status, jobs[0]?.error], ['concluded', 'Input/output error']);
      ok(await d.qmp.execute('job-dismiss', { id: 'm' }));
      assert.equal(await d.quit(), 0);
    });
    assert.ok(fs.readFileSync(`${dir}/src.raw`).equals(sourceBytes()));
    run('qemu-img', ['check', `${dir}/tgt.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('on-source-error=stop pauses the mirror with io-status failed; after the fault clears, resume reaches READY and the target equals the source', async () => {
  const dir = tmpDir();
  try {
    await withFlakySource(dir, async (d) => {
      const from = await startThenFail(d, dir, 'stop');
      const error = (await d.event('BLOCK_JOB_ERROR', from))['data'] as Record<string, unknown>;
      assert.deepEqual([error['operation'], error['action']], ['read', 'stop']);
      await d.event('JOB_STATUS_CHANGE', from, (e) => e['status'] === 'paused');
      const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<Record<string, unknown>>;
      assert.deepEqual([jobs[0]?.['paused'], jobs[0]?.['io-status']], [true, 'failed'], JSON.stringify(jobs));
      fs.rmSync(`${dir}/trigger`);
      ok(await d.qmp.execute('block-job-set-speed', { device: 'm', speed: 0 }));
      ok(await d.qmp.execute('job-resume', { id: 'm' }));
      await d.event('BLOCK_JOB_READY', from);
      ok(await d.qmp.execute('job-complete', { id: 'm' }));
      const done = (await d.event('BLOCK_JOB_COMPLETED', from))['data'] as Record<string, unknown>;
      assert.equal(done['error'], undefined);
      assert.equal(await d.quit(), 0);
    });
    assert.ok(fs.readFileSync(`${dir}/src.raw`).equals(sourceBytes()));
    assertImageEquals(dir, `${dir}/tgt.qcow2`, sourceBytes());
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
