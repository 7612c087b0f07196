// ENOSPC on a mirror target (nbdkit's error filter behind an NBD node of `vdisk serve --qmp`): reported as
// "No space left on device" with on-target-error=report, and a stop with io-status `nospace` under `enospc`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { run, startServer } from './support/serve-process.js';
import {
  addExportedImage,
  assertImageEquals,
  GuestModel,
  MiB,
  ok,
  readImage,
  stopProcess,
  tmpDir,
  withDaemon,
  type E2eDaemon,
} from './support/e2e-daemon.js';

const SIZE = 8 * MiB;

function makeDisk(dir: string): Buffer {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/disk.qcow2`, String(SIZE)]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 3M', '-c', 'write -P 0x5b 6M 1M', `${dir}/disk.qcow2`]);
  return readImage(dir, `${dir}/disk.qcow2`);
}

/** Runs `fn` with the served disk and an NBD node `full` whose every write and zero fails with ENOSPC. */
async function withFullTarget(dir: string, fn: (d: E2eDaemon) => Promise<void>): Promise<void> {
  const sock = `${dir}/full.sock`;
  const full = await startServer(
    ['nbdkit', '-f', '-U', sock, '--filter=error', 'memory', String(SIZE), 'error-pwrite=ENOSPC', 'error-pwrite-rate=1', 'error-zero=ENOSPC', 'error-zero-rate=1'],
    sock,
    { probe: true },
  );
  try {
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/disk.qcow2` });
      ok(await d.qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': 'full', server: { type: 'unix', path: sock } }));
      await fn(d);
    });
  } finally {
    full.proc.kill('SIGTERM');
    await stopProcess(full.proc, full.exited);
  }
}

test('a mirror to a target failing with ENOSPC fails the job with "No space left on device"; the source stays usable', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeDisk(dir), 37);
    await withFullTarget(dir, async (d) => {
      const from = d.mark();
      ok(await d.qmp.execute('blockdev-mirror', { device: 'disk', 'job-id': 'm', target: 'full', sync: 'full', 'auto-dismiss': false }));
      const error = (await d.event('BLOCK_JOB_ERROR', from))['data'] as Record<string, unknown>;
      assert.deepEqual([error['device'], error['operation'], error['action']], ['m', 'write', 'report']);
      const done = await d.event('BLOCK_JOB_COMPLETED', from);
      assert.match(String((done['data'] as Record<string, unknown>)['error']), /^No space left on device$/);
      const jobs = ok(await d.qmp.execute('query-jobs')) as Array<{ status: string; error?: string }>;
      assert.equal(jobs[0]?.status, 'concluded');
      assert.match(jobs[0]?.error ?? '', /^No space left on device$/);
      ok(await d.qmp.execute('job-dismiss', { id: 'm' }));
      run('qemu-io', ['-f', 'raw', ...guest.writes(10).flatMap((c) => ['-c', c]), d.uri('disk')]);
      assert.equal(await d.quit(), 0);
    });
    assertImageEquals(dir, `${dir}/disk.qcow2`, guest.model);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('on-target-error=enospc stops the mirror on ENOSPC with io-status nospace; cancel then ends it', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeDisk(dir), 43);
    await withFullTarget(dir, async (d) => {
      const from = d.mark();
      ok(await d.qmp.execute('blockdev-mirror', { device: 'disk', 'job-id': 'm', target: 'full', sync: 'full', 'on-target-error': 'enospc' }));
      const error = (await d.event('BLOCK_JOB_ERROR', from))['data'] as Record<string, unknown>;
      assert.deepEqual([error['operation'], error['action']], ['write', 'stop']);
      await d.event('JOB_STATUS_CHANGE', from, (e) => e['id'] === 'm' && e['status'] === 'paused');
      const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<Record<string, unknown>>;
      assert.deepEqual([jobs[0]?.['paused'], jobs[0]?.['io-status']], [true, 'nospace'], JSON.stringify(jobs));
      run('qemu-io', ['-f', 'raw', ...guest.writes(10).flatMap((c) => ['-c', c]), d.uri('disk')]);
      ok(await d.qmp.execute('block-job-cancel', { device: 'm', force: true }));
      await d.event('BLOCK_JOB_CANCELLED', from);
      assert.equal(await d.quit(), 0);
    });
    assertImageEquals(dir, `${dir}/disk.qcow2`, guest.model);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
