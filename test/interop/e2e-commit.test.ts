// block-commit through a real `vdisk serve --qmp` while qemu-io writes over the NBD export: complete,
// cancel, and stopping the daemon or deleting the export in the middle of the job.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { run } from './support/serve-process.js';
import {
  addExportedImage,
  assertImageEquals,
  GuestModel,
  MiB,
  ok,
  QemuIoSession,
  readImage,
  tmpDir,
  withDaemon,
} from './support/e2e-daemon.js';

const SIZE = 32 * MiB;

/** base.qcow2 with data, top.qcow2 above it with 8 MiB of its own; returns the disk as the guest sees it. */
function makeChain(dir: string): Buffer {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, String(SIZE)]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 4M', '-c', 'write -P 0x12 20M 2M', `${dir}/base.qcow2`]);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', `${dir}/top.qcow2`]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 2M 4M', '-c', 'write -P 0x22 16M 4M', '-c', 'write -z 21M 64k', `${dir}/top.qcow2`]);
  return readImage(dir, `${dir}/top.qcow2`);
}

test('active block-commit on the exported top while qemu-io writes: READY, complete, the export serves the base on old and new connections', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeChain(dir), 41);
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/top.qcow2` });
      const io = new QemuIoSession(d.uri('disk'));
      try {
        await io.run(guest.writes(20));
        const from = d.mark();
        // A low speed keeps the copy running while the guest writes.
        ok(await d.qmp.execute('block-commit', { device: 'disk', 'job-id': 'c0', speed: 16 * MiB }));
        const created = await d.event('JOB_STATUS_CHANGE', from, (e) => e['id'] === 'c0');
        assert.equal(created['data'] && (created['data'] as { status: string }).status, 'created');
        await io.run(guest.writes(40));
        run('qemu-io', ['-f', 'raw', ...guest.writes(10).flatMap((c) => ['-c', c]), d.uri('disk')]);
        await d.event('BLOCK_JOB_READY', from);
        const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<Record<string, unknown>>;
        assert.equal(jobs[0]?.['ready'], true);
        assert.equal(jobs[0]?.['type'], 'commit');
        await io.run(guest.writes(20));
        ok(await d.qmp.execute('job-complete', { id: 'c0' }));
        const done = await d.event('BLOCK_JOB_COMPLETED', from);
        assert.equal((done['data'] as Record<string, unknown>)['error'], undefined);
        // The existing connection keeps working, and so does a new one.
        await io.run(guest.writes(20));
        run('qemu-io', ['-f', 'raw', ...guest.writes(10).flatMap((c) => ['-c', c]), d.uri('disk')]);
        const exports = ok(await d.qmp.execute('query-block-exports')) as Array<{ 'node-name': string }>;
        const nodes = ok(await d.qmp.execute('query-named-block-nodes')) as Array<{ 'node-name': string; file: string }>;
        const served = nodes.find((n) => n['node-name'] === exports[0]?.['node-name']);
        assert.equal(served?.file, `${dir}/base.qcow2`, JSON.stringify(nodes));
        assert.equal(nodes.some((n) => n['node-name'] === 'disk'), false, 'the old top left the graph');
      } finally {
        await io.close();
      }
      assert.equal(await d.quit(), 0);
    });
    assertImageEquals(dir, `${dir}/base.qcow2`, guest.model);
    run('qemu-img', ['check', `${dir}/top.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('block-job-cancel of an active commit before complete: the top stays active, both images check clean', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeChain(dir), 7);
    const baseBefore = readImage(dir, `${dir}/base.qcow2`);
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/top.qcow2` });
      const io = new QemuIoSession(d.uri('disk'));
      try {
        const from = d.mark();
        ok(await d.qmp.execute('block-commit', { device: 'disk', 'job-id': 'c1', speed: 2 * MiB }));
        await io.run(guest.writes(30));
        ok(await d.qmp.execute('block-job-cancel', { device: 'c1' }));
        await d.event('BLOCK_JOB_CANCELLED', from);
        await io.run(guest.writes(10));
        const exports = ok(await d.qmp.execute('query-block-exports')) as Array<{ 'node-name': string }>;
        assert.equal(exports[0]?.['node-name'], 'disk');
      } finally {
        await io.close();
      }
      assert.equal(await d.quit(), 0);
    });
    assertImageEquals(dir, `${dir}/top.qcow2`, guest.model);
    // The base only gained what the top shadows: its own content outside the top's clusters is unchanged.
    const base = readImage(dir, `${dir}/base.qcow2`);
    assert.deepEqual(base.subarray(0, 2 * MiB), baseBefore.subarray(0, 2 * MiB));
    run('qemu-img', ['check', `${dir}/base.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

for (const how of ['quit', 'SIGTERM', 'block-export-del'] as const) {
  test(`${how} during a running commit cancels it promptly; the images stay usable`, async () => {
    const dir = tmpDir();
    try {
      const guest = new GuestModel(makeChain(dir), 3);
      await withDaemon(dir, async (d) => {
        await addExportedImage(d, { name: 'disk', file: `${dir}/top.qcow2` });
        run('qemu-io', ['-f', 'raw', ...guest.writes(10).flatMap((c) => ['-c', c]), d.uri('disk')]);
        const from = d.mark();
        // 1 MiB/s: the copy of 8 MiB would take seconds; the stop must not wait for it.
        ok(await d.qmp.execute('block-commit', { device: 'disk', 'job-id': 'c2', speed: MiB }));
        await d.event('JOB_STATUS_CHANGE', from, (e) => e['status'] === 'running');
        const started = Date.now();
        if (how === 'quit') {
          assert.equal(await d.quit(), 0);
        } else if (how === 'SIGTERM') {
          d.served.proc.kill('SIGTERM');
          assert.equal(await d.served.exited, 0);
        } else {
          ok(await d.qmp.execute('block-export-del', { id: 'exp-disk' }));
          await d.event('BLOCK_JOB_CANCELLED', from);
          const jobs = ok(await d.qmp.execute('query-jobs')) as unknown[];
          assert.deepEqual(jobs, []);
          assert.equal(await d.quit(), 0);
        }
        // Far below the 8 s the copy would need at 1 MiB/s (not a timing benchmark: a hang guard).
        assert.ok(Date.now() - started < 4000, `stop took ${Date.now() - started} ms`);
      });
      assertImageEquals(dir, `${dir}/top.qcow2`, guest.model);
      run('qemu-img', ['check', `${dir}/base.qcow2`]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
