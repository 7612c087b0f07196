// The speed limit of a running job, seen from a QMP client: progress in query-block-jobs over ~3 s stays within
// ±10% of speed × time (a behaviour check of the rate limiter, not a benchmark), and block-job-set-speed changes
// the rate of a running job. The first chunk is excluded: the limiter lets one slice run ahead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { run } from './support/serve-process.js';
import { addExportedImage, MiB, ok, tmpDir, withDaemon, type E2eDaemon } from './support/e2e-daemon.js';

const SIZE = 48 * MiB;

interface Sample {
  readonly at: number;
  readonly offset: number;
}

async function sample(d: E2eDaemon): Promise<Sample> {
  const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<{ offset: number }>;
  return { at: performance.now(), offset: jobs[0]?.offset ?? 0 };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until the job has copied its first chunk; the sample taken then. */
async function afterFirstChunk(d: E2eDaemon): Promise<Sample> {
  for (let i = 0; i < 200; i++) {
    const s = await sample(d);
    if (s.offset > 0) return s;
    await sleep(10);
  }
  throw new Error('the job made no progress');
}

/** Bytes per second between two samples `ms` apart. */
async function rateOver(d: E2eDaemon, ms: number): Promise<number> {
  const a = await sample(d);
  await sleep(ms);
  const b = await sample(d);
  return ((b.offset - a.offset) * 1000) / (b.at - a.at);
}

function assertNear(rate: number, speed: number): void {
  assert.ok(Math.abs(rate - speed) <= speed * 0.1, `measured ${(rate / MiB).toFixed(3)} MiB/s for a limit of ${(speed / MiB).toFixed(3)} MiB/s`);
}

test('a mirror limited to 4 MiB/s copies 4 MiB/s ±10% over 3 s; set-speed to 8 MiB/s takes effect while it runs', async () => {
  const dir = tmpDir();
  try {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/disk.qcow2`, String(SIZE)]);
    run('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a 0 ${SIZE}`, `${dir}/disk.qcow2`]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/tgt.qcow2`, String(SIZE)]);
    await withDaemon(dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: `${dir}/disk.qcow2` });
      ok(await d.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'tgt', file: { driver: 'file', filename: `${dir}/tgt.qcow2` } }));
      // 64 KiB chunks: the offset moves in steps of 1/64 MiB, far below the tolerance.
      const args = { device: 'disk', 'job-id': 'm', target: 'tgt', sync: 'full', granularity: 65536, 'buf-size': 65536 };
      ok(await d.qmp.execute('blockdev-mirror', { ...args, speed: 4 * MiB }));
      await afterFirstChunk(d);
      await sleep(200);
      assertNear(await rateOver(d, 3000), 4 * MiB);
      ok(await d.qmp.execute('block-job-set-speed', { device: 'm', speed: 8 * MiB }));
      await sleep(200);
      assertNear(await rateOver(d, 2000), 8 * MiB);
      const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<{ speed: number; ready: boolean }>;
      assert.deepEqual([jobs[0]?.speed, jobs[0]?.ready], [8 * MiB, false]);
      ok(await d.qmp.execute('block-job-cancel', { device: 'm', force: true }));
      assert.equal(await d.quit(), 0);
    });
    run('qemu-img', ['check', `${dir}/tgt.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
