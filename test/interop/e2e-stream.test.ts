// block-stream through a real `vdisk serve --qmp` while qemu-io writes over the NBD export: the served
// overlay above a two-level backing chain pulls the chain's data up and drops it (or stops at base-node).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { run } from './support/serve-process.js';
import {
  assertImageEquals,
  GuestModel,
  MiB,
  ok,
  QemuIoSession,
  readImage,
  tmpDir,
  withDaemon,
  type E2eDaemon,
} from './support/e2e-daemon.js';

const SIZE = 32 * MiB;

/** base.qcow2 ← mid.qcow2 ← top.qcow2, each with data of its own; returns the disk as the guest sees it. */
function makeChain(dir: string): Buffer {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, String(SIZE)]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 6M', '-c', 'write -P 0x12 20M 3M', `${dir}/base.qcow2`]);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', `${dir}/mid.qcow2`]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 4M 4M', '-c', 'write -z 21M 64k', '-c', 'write -P 0x22 28M 2M', `${dir}/mid.qcow2`]);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', `${dir}/top.qcow2`]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x31 1M 1M', '-c', 'write -P 0x32 16M 2M', `${dir}/top.qcow2`]);
  return readImage(dir, `${dir}/top.qcow2`);
}

/** Adds the chain as explicit nodes base ← mid ← disk (so base-node can name one) and exports `disk`. */
async function addChain(d: E2eDaemon, dir: string): Promise<void> {
  let below: string | null = null;
  for (const [name, file] of [['base', 'base'], ['mid', 'mid'], ['disk', 'top']] as const) {
    ok(await d.qmp.execute('blockdev-add', { driver: 'file', filename: `${dir}/${file}.qcow2`, 'node-name': `${name}-file` }));
    ok(await d.qmp.execute('blockdev-add', { driver: 'qcow2', file: `${name}-file`, backing: below, 'node-name': name }));
    below = name;
  }
  ok(await d.qmp.execute('block-export-add', { type: 'nbd', id: 'exp-disk', 'node-name': 'disk', writable: true }));
}

function backingOf(file: string): string | undefined {
  const info = JSON.parse(run('qemu-img', ['info', '-U', '--output=json', file])) as Record<string, unknown>;
  return info['backing-filename'] as string | undefined;
}

for (const mode of ['whole chain', 'base-node'] as const) {
  test(`block-stream (${mode}) of the exported overlay while qemu-io writes: the overlay holds the guest's disk and the chain is cut`, async () => {
    const dir = tmpDir();
    try {
      const guest = new GuestModel(makeChain(dir), mode === 'base-node' ? 17 : 5);
      const baseBefore = readImage(dir, `${dir}/base.qcow2`);
      const midBefore = readImage(dir, `${dir}/mid.qcow2`);
      await withDaemon(dir, async (d) => {
        await addChain(d, dir);
        const io = new QemuIoSession(d.uri('disk'));
        try {
          await io.run(guest.writes(10));
          const from = d.mark();
          // A low speed keeps the copy running while the guest writes; paused right after the
          // start, the job is certainly unfinished when the writes land and when it is queried
          // (with base-node there is little to copy, and it once finished before the query).
          const args = { device: 'disk', 'job-id': 's0', speed: 8 * MiB, ...(mode === 'base-node' ? { 'base-node': 'base' } : {}) };
          ok(await d.qmp.execute('block-stream', args));
          ok(await d.qmp.execute('block-job-pause', { device: 's0' }));
          await io.run(guest.writes(20));
          const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<Record<string, unknown>>;
          assert.deepEqual([jobs[0]?.['type'], jobs[0]?.['paused']], ['stream', true], JSON.stringify(jobs));
          ok(await d.qmp.execute('block-job-resume', { device: 's0' }));
          await io.run(guest.writes(20));
          ok(await d.qmp.execute('block-job-set-speed', { device: 's0', speed: 0 }));
          const done = await d.event('BLOCK_JOB_COMPLETED', from);
          assert.equal((done['data'] as Record<string, unknown>)['error'], undefined, JSON.stringify(done));
          await io.run(guest.writes(20));
          const nodes = ok(await d.qmp.execute('query-named-block-nodes')) as Array<{ 'node-name': string; backing_file?: string }>;
          const disk = nodes.find((n) => n['node-name'] === 'disk');
          assert.ok(disk, JSON.stringify(nodes));
        } finally {
          await io.close();
        }
        assert.equal(await d.quit(), 0);
      });
      assert.equal(backingOf(`${dir}/top.qcow2`), mode === 'whole chain' ? undefined : `${dir}/base.qcow2`);
      assertImageEquals(dir, `${dir}/top.qcow2`, guest.model);
      // Stream never writes below the overlay.
      assert.deepEqual(readImage(dir, `${dir}/base.qcow2`), baseBefore);
      assert.deepEqual(readImage(dir, `${dir}/mid.qcow2`), midBefore);
      run('qemu-img', ['check', `${dir}/mid.qcow2`]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
