// ploop stack merges through a real `vdisk serve --qmp`: a DiskDescriptor.xml stack of 3 deltas added with
// blockdev-add driver=parallels and exported, qemu-io writing over NBD during the merge. block-commit is the
// backward merge (ready, complete), block-stream the forward merge; cancel before complete leaves the stack.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { descriptorChain } from '../../src/formats/ploop/index.js';
import { buildStack, qemuRead } from './ploop-helpers.js';
import { run } from './support/serve-process.js';
import { addExportedImage, GuestModel, MiB, ok, QemuIoSession, tmpDir, withDaemon } from './support/e2e-daemon.js';

const SIZE = 16 * MiB;
const WRITES = [
  ['write -P 0x11 0 6M', 'write -P 0x12 12M 1M'],
  ['write -P 0x21 2M 3M', 'write -P 0x22 9M 2M'],
  ['write -P 0x31 512k 1M', 'write -P 0x32 10M 256k'],
];

interface Stack {
  readonly dir: string;
  readonly xml: string;
  readonly files: string[];
  readonly guest: GuestModel;
}

async function withStack(seed: number, fn: (s: Stack) => Promise<void>): Promise<void> {
  const dir = tmpDir();
  try {
    const { xml, files } = await buildStack(dir, SIZE, WRITES);
    await fn({ dir, xml, files, guest: new GuestModel(qemuRead(dir, files), seed) });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The stack the descriptor names now: qemu-img check clean on each delta, and QEMU reads the model. */
async function assertStack(s: Stack, expected: readonly string[]): Promise<void> {
  const chain = (await descriptorChain(s.xml)).map((d) => d.file);
  assert.deepEqual(chain, expected);
  for (const f of chain) run('qemu-img', ['check', '-f', 'parallels', f]);
  assert.ok(qemuRead(s.dir, chain).equals(s.guest.model), 'the stack reads the guest model');
}

test('block-commit on an exported ploop stack while qemu-io writes: ready, complete; the descriptor loses the top delta', async () => {
  await withStack(11, async (s) => {
    await withDaemon(s.dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: s.xml, driver: 'parallels' });
      const io = new QemuIoSession(d.uri('disk'));
      try {
        await io.run(s.guest.writes(10));
        const from = d.mark();
        // Paused straight after the start (at 1 MiB/s the copy needs seconds): the guest writes land while
        // the merge is unfinished, so the dirty tracking has to catch them.
        ok(await d.qmp.execute('block-commit', { device: 'disk', 'job-id': 'm0', speed: MiB }));
        ok(await d.qmp.execute('block-job-pause', { device: 'm0' }));
        const paused = ok(await d.qmp.execute('query-block-jobs')) as Array<Record<string, unknown>>;
        assert.deepEqual([paused[0]?.['type'], paused[0]?.['paused'], paused[0]?.['ready']], ['commit', true, false]);
        await io.run(s.guest.writes(30));
        ok(await d.qmp.execute('block-job-resume', { device: 'm0' }));
        ok(await d.qmp.execute('block-job-set-speed', { device: 'm0', speed: 0 }));
        await d.event('BLOCK_JOB_READY', from);
        await io.run(s.guest.writes(10));
        ok(await d.qmp.execute('job-complete', { id: 'm0' }));
        const done = await d.event('BLOCK_JOB_COMPLETED', from);
        assert.equal((done['data'] as Record<string, unknown>)['error'], undefined, JSON.stringify(done));
        // The same connection keeps writing, now into the delta below.
        await io.run(s.guest.writes(10));
      } finally {
        await io.close();
      }
      assert.equal(await d.quit(), 0);
    });
    await assertStack(s, s.files.slice(0, 2));
    assert.equal(fs.existsSync(s.files[2] ?? ''), false, 'the merged top delta is deleted');
  });
});

test('block-stream on an exported ploop stack while qemu-io writes: the delta below the top is merged up into it', async () => {
  await withStack(13, async (s) => {
    await withDaemon(s.dir, async (d) => {
      await addExportedImage(d, { name: 'disk', file: s.xml, driver: 'parallels' });
      const io = new QemuIoSession(d.uri('disk'));
      try {
        const from = d.mark();
        ok(await d.qmp.execute('block-stream', { device: 'disk', 'job-id': 'f0', speed: 2 * MiB }));
        await io.run(s.guest.writes(30));
        const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<Record<string, unknown>>;
        assert.equal(jobs[0]?.['type'], 'stream', JSON.stringify(jobs));
        ok(await d.qmp.execute('block-job-set-speed', { device: 'f0', speed: 0 }));
        const done = await d.event('BLOCK_JOB_COMPLETED', from);
        assert.equal((done['data'] as Record<string, unknown>)['error'], undefined, JSON.stringify(done));
        await io.run(s.guest.writes(10));
      } finally {
        await io.close();
      }
      assert.equal(await d.quit(), 0);
    });
    await assertStack(s, [s.files[0] ?? '', s.files[2] ?? '']);
    assert.equal(fs.existsSync(s.files[1] ?? ''), false, 'the merged delta is deleted');
  });
});

for (const verb of ['block-commit', 'block-stream'] as const) {
  test(`cancel of a ${verb} ploop merge before it ends leaves the 3-delta stack valid and reading the guest's writes`, async () => {
    await withStack(verb === 'block-commit' ? 19 : 23, async (s) => {
      await withDaemon(s.dir, async (d) => {
        await addExportedImage(d, { name: 'disk', file: s.xml, driver: 'parallels' });
        const io = new QemuIoSession(d.uri('disk'));
        try {
          const from = d.mark();
          ok(await d.qmp.execute(verb, { device: 'disk', 'job-id': 'x0', speed: MiB }));
          await io.run(s.guest.writes(20));
          ok(await d.qmp.execute('block-job-cancel', { device: 'x0' }));
          await d.event('BLOCK_JOB_CANCELLED', from);
          await io.run(s.guest.writes(10));
        } finally {
          await io.close();
        }
        assert.equal(await d.quit(), 0);
      });
      await assertStack(s, s.files);
    });
  });
}
