// Mirror through a real `vdisk serve --qmp` while qemu-io writes over the NBD export: drive-mirror and
// blockdev-mirror to local qcow2 targets, to a qemu-nbd export, a speed limit seen in query-block-jobs,
// and an EIO target (nbdkit's error filter) that fails the job and leaves the source usable.
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
  QemuIoSession,
  readImage,
  stopProcess,
  tmpDir,
  withDaemon,
} from './support/e2e-daemon.js';

const SIZE = 32 * MiB;

function makeDisk(dir: string, fill = false): Buffer {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/disk.qcow2`, String(SIZE)]);
  const writes = fill ? ['-c', `write -P 0x5a 0 ${SIZE}`] : ['-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x12 9M 5M', '-c', 'write -z 20M 1M'];
  run('qemu-io', ['-f', 'qcow2', ...writes, `${dir}/disk.qcow2`]);
  return readImage(dir, `${dir}/disk.qcow2`);
}

test('drive-mirror of the served disk to a new qcow2 with guest writes during the copy; complete switches the export to the target', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeDisk(dir), 17);
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/disk.qcow2` });
      const io = new QemuIoSession(d.uri('disk'));
      try {
        const from = d.mark();
        ok(await d.qmp.execute('drive-mirror', { device: 'disk', 'job-id': 'm0', target: `${dir}/target.qcow2`, format: 'qcow2', sync: 'full', speed: 16 * MiB }));
        await io.run(guest.writes(40));
        await d.event('BLOCK_JOB_READY', from);
        await io.run(guest.writes(20));
        ok(await d.qmp.execute('block-job-complete', { device: 'm0' }));
        await d.event('BLOCK_JOB_COMPLETED', from);
        // From now on the guest's writes go to the target only.
        await io.run(guest.writes(20));
      } finally {
        await io.close();
      }
      assert.equal(await d.quit(), 0);
    });
    assertImageEquals(dir, `${dir}/target.qcow2`, guest.model);
    run('qemu-img', ['check', `${dir}/disk.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('blockdev-mirror cancelled after READY leaves the target a consistent copy; drive-mirror cancel removes its target node', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeDisk(dir), 23);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/tgt.qcow2`, String(SIZE)]);
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/disk.qcow2` });
      ok(await d.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'tgt', file: { driver: 'file', filename: `${dir}/tgt.qcow2` } }));
      const io = new QemuIoSession(d.uri('disk'));
      try {
        let from = d.mark();
        ok(await d.qmp.execute('blockdev-mirror', { device: 'disk', 'job-id': 'm1', target: 'tgt', sync: 'full' }));
        await io.run(guest.writes(30));
        await d.event('BLOCK_JOB_READY', from);
        ok(await d.qmp.execute('block-job-cancel', { device: 'm1' }));
        await d.event('JOB_STATUS_CHANGE', from, (e) => e['id'] === 'm1' && e['status'] === 'null');
        const exports = ok(await d.qmp.execute('query-block-exports')) as Array<{ 'node-name': string }>;
        assert.equal(exports[0]?.['node-name'], 'disk');
        // drive-mirror cancelled: its target leaves the graph.
        from = d.mark();
        ok(await d.qmp.execute('drive-mirror', { device: 'disk', 'job-id': 'm2', target: `${dir}/t2.qcow2`, format: 'qcow2', sync: 'full', 'node-name': 't2', speed: MiB }));
        ok(await d.qmp.execute('block-job-cancel', { device: 'm2', force: true }));
        await d.event('JOB_STATUS_CHANGE', from, (e) => e['id'] === 'm2' && e['status'] === 'null');
        await new Promise((r) => setTimeout(r, 50));
        const nodes = ok(await d.qmp.execute('query-named-block-nodes')) as Array<{ 'node-name': string }>;
        assert.equal(nodes.some((n) => n['node-name'] === 't2'), false, JSON.stringify(nodes));
      } finally {
        await io.close();
      }
      assert.equal(await d.quit(), 0);
    });
    assertImageEquals(dir, `${dir}/tgt.qcow2`, guest.model);
    assertImageEquals(dir, `${dir}/disk.qcow2`, guest.model);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a mirror with a speed limit never gets ahead of speed × elapsed (plus one chunk) in query-block-jobs', async () => {
  const dir = tmpDir();
  try {
    makeDisk(dir, true);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/tgt.qcow2`, String(SIZE)]);
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/disk.qcow2` });
      ok(await d.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'tgt', file: { driver: 'file', filename: `${dir}/tgt.qcow2` } }));
      const speed = 8 * MiB;
      const started = Date.now();
      ok(await d.qmp.execute('blockdev-mirror', { device: 'disk', 'job-id': 'm3', target: 'tgt', sync: 'full', speed }));
      let last = 0;
      for (let i = 0; i < 6; i++) {
        await new Promise((r) => setTimeout(r, 200));
        const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<{ offset: number; speed: number }>;
        const elapsed = (Date.now() - started) / 1000;
        const offset = jobs[0]?.offset ?? 0;
        assert.equal(jobs[0]?.speed, speed);
        assert.ok(offset <= speed * elapsed + 2 * MiB, `offset ${offset} after ${elapsed}s at ${speed} B/s`);
        last = offset;
      }
      assert.ok(last > 0, 'the job made progress');
      ok(await d.qmp.execute('block-job-cancel', { device: 'm3', force: true }));
      assert.equal(await d.quit(), 0);
    });
    run('qemu-img', ['check', `${dir}/tgt.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('blockdev-mirror to a remote qemu-nbd export (driver=nbd): after complete the target equals the source', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeDisk(dir), 5);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/remote.qcow2`, String(SIZE)]);
    const remoteSock = `${dir}/remote.sock`;
    const q = await startServer(['qemu-nbd', '-t', '-f', 'qcow2', '-k', remoteSock, `${dir}/remote.qcow2`], remoteSock, { probe: true });
    try {
      await withDaemon(dir, async (d) => {
        await addExportedImage(d, { name: 'disk', file: `${dir}/disk.qcow2` });
        ok(await d.qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': 'remote', server: { type: 'unix', path: remoteSock } }));
        const io = new QemuIoSession(d.uri('disk'));
        try {
          const from = d.mark();
          ok(await d.qmp.execute('blockdev-mirror', { device: 'disk', 'job-id': 'mr', target: 'remote', sync: 'full' }));
          await io.run(guest.writes(20));
          await d.event('BLOCK_JOB_READY', from);
          await io.run(guest.writes(10));
          ok(await d.qmp.execute('job-complete', { id: 'mr' }));
          await d.event('BLOCK_JOB_COMPLETED', from);
          await io.run(guest.writes(10));
        } finally {
          await io.close();
        }
        assert.equal(await d.quit(), 0);
      });
    } finally {
      q.proc.kill('SIGTERM');
      await stopProcess(q.proc, q.exited);
    }
    assertImageEquals(dir, `${dir}/remote.qcow2`, guest.model);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a mirror whose NBD target fails every write with EIO (nbdkit error filter) fails with the error; the source stays usable', async () => {
  const dir = tmpDir();
  try {
    const guest = new GuestModel(makeDisk(dir), 9);
    const badSock = `${dir}/bad.sock`;
    const bad = await startServer(['nbdkit', '-f', '-U', badSock, '--filter=error', 'memory', String(SIZE), 'error-pwrite=EIO', 'error-pwrite-rate=1', 'error-zero=EIO', 'error-zero-rate=1'], badSock, { probe: true });
    try {
      await withDaemon(dir, async (d) => {
        await addExportedImage(d, { name: 'disk', file: `${dir}/disk.qcow2` });
        ok(await d.qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': 'bad', server: { type: 'unix', path: badSock } }));
        const from = d.mark();
        ok(await d.qmp.execute('blockdev-mirror', { device: 'disk', 'job-id': 'me', target: 'bad', sync: 'full', 'auto-dismiss': false }));
        const done = await d.event('BLOCK_JOB_COMPLETED', from);
        assert.match(String((done['data'] as Record<string, unknown>)['error']), /^Input\/output error$/);
        await d.event('BLOCK_JOB_ERROR', from);
        const jobs = ok(await d.qmp.execute('query-jobs')) as Array<{ id: string; status: string; error?: string }>;
        assert.equal(jobs[0]?.status, 'concluded');
        assert.ok(jobs[0]?.error, JSON.stringify(jobs));
        ok(await d.qmp.execute('job-dismiss', { id: 'me' }));
        run('qemu-io', ['-f', 'raw', ...guest.writes(10).flatMap((c) => ['-c', c]), d.uri('disk')]);
        assert.equal(await d.quit(), 0);
      });
    } finally {
      bad.proc.kill('SIGTERM');
      await stopProcess(bad.proc, bad.exited);
    }
    assertImageEquals(dir, `${dir}/disk.qcow2`, guest.model);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
