// Cancel of block-commit and blockdev-mirror through QMP at each state a client can catch a job in:
// just created (the start command and the cancel in one write), running, paused, ready. Afterwards both
// images check clean with qemu-img and the source (the exported disk) holds exactly what the guest wrote.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { run } from './support/serve-process.js';
import { addExportedImage, assertImageEquals, GuestModel, MiB, ok, readImage, tmpDir, withDaemon, type E2eDaemon } from './support/e2e-daemon.js';

const SIZE = 16 * MiB;

type Kind = 'commit' | 'mirror';
type State = 'created' | 'running' | 'paused' | 'ready';

/** The exported disk (a qcow2 top over a base for commit; one qcow2 for mirror) and, for mirror, an empty target. */
function makeImages(dir: string, kind: Kind): Buffer {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, String(SIZE)]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 6M', '-c', 'write -P 0x12 10M 2M', `${dir}/base.qcow2`]);
  if (kind === 'commit') {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', `${dir}/disk.qcow2`]);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 2M 6M', '-c', 'write -z 11M 64k', `${dir}/disk.qcow2`]);
  } else {
    fs.renameSync(`${dir}/base.qcow2`, `${dir}/disk.qcow2`);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/tgt.qcow2`, String(SIZE)]);
  }
  return readImage(dir, `${dir}/disk.qcow2`);
}

/** Starts the job; a slow speed keeps it running for the running and paused cases. */
function startArgs(kind: Kind, state: State): [string, Record<string, unknown>] {
  const speed = state === 'running' || state === 'paused' ? { speed: MiB } : {};
  return kind === 'commit'
    ? ['block-commit', { device: 'disk', 'job-id': 'j', ...speed }]
    : ['blockdev-mirror', { device: 'disk', 'job-id': 'j', target: 'tgt', sync: 'full', ...speed }];
}

const statusOf = (d: E2eDaemon, from: number, status: string): Promise<Record<string, unknown>> =>
  d.event('JOB_STATUS_CHANGE', from, (e) => e['id'] === 'j' && e['status'] === status);

function guestWrites(d: E2eDaemon, guest: GuestModel, count: number): void {
  run('qemu-io', ['-f', 'raw', ...guest.writes(count).flatMap((c) => ['-c', c]), d.uri('disk')]);
}

/** Brings the job to `state`, cancels it there and waits for it to leave; the final event seen. */
async function cancelAt(d: E2eDaemon, kind: Kind, state: State, guest: GuestModel): Promise<string> {
  const from = d.mark();
  const [cmd, args] = startArgs(kind, state);
  if (state === 'created') {
    // One write: the cancel is processed right after the job was created, before any chunk could be copied.
    d.qmp.sendRaw(JSON.stringify({ execute: cmd, arguments: args, id: 'start' }) + JSON.stringify({ execute: 'job-cancel', arguments: { id: 'j' }, id: 'cancel' }));
    const replies = await Promise.all(['start', 'cancel'].map((id) => d.qmp.next((m) => m['id'] === id, from)));
    for (const r of replies) ok(r);
  } else {
    ok(await d.qmp.execute(cmd, args));
    if (state === 'running') {
      await statusOf(d, from, 'running');
      guestWrites(d, guest, 10);
      const jobs = ok(await d.qmp.execute('query-jobs')) as Array<{ status: string }>;
      assert.equal(jobs[0]?.status, 'running');
    } else if (state === 'paused') {
      ok(await d.qmp.execute('job-pause', { id: 'j' }));
      await statusOf(d, from, 'paused');
      guestWrites(d, guest, 10);
      const jobs = ok(await d.qmp.execute('query-block-jobs')) as Array<{ paused: boolean }>;
      assert.equal(jobs[0]?.paused, true);
    } else {
      await d.event('BLOCK_JOB_READY', from);
      guestWrites(d, guest, 10);
    }
    ok(await d.qmp.execute('block-job-cancel', { device: 'j' }));
  }
  await statusOf(d, from, 'null');
  const ends = d.qmp.messages.slice(from).filter((m) => m['event'] === 'BLOCK_JOB_CANCELLED' || m['event'] === 'BLOCK_JOB_COMPLETED');
  assert.equal(ends.length, 1, JSON.stringify(ends));
  assert.deepEqual(ok(await d.qmp.execute('query-jobs')), []);
  // The export still serves the source, and the guest keeps writing to it.
  const exports = ok(await d.qmp.execute('query-block-exports')) as Array<{ 'node-name': string }>;
  assert.equal(exports[0]?.['node-name'], 'disk');
  guestWrites(d, guest, 5);
  return String(ends[0]?.['event']);
}

/** Every 64 KiB block where `after` differs from `before` is allocated in the top image itself (depth 0). */
function assertChangesShadowed(dir: string, before: Buffer, after: Buffer): void {
  const map = JSON.parse(run('qemu-img', ['map', '--output=json', '-f', 'qcow2', `${dir}/disk.qcow2`])) as Array<{ start: number; length: number; depth: number }>;
  const own = map.filter((e) => e.depth === 0);
  const block = 64 * 1024;
  for (let off = 0; off < after.length; off += block) {
    if (after.subarray(off, off + block).equals(before.subarray(off, off + block))) continue;
    assert.ok(
      own.some((e) => e.start <= off && off + block <= e.start + e.length),
      `the base changed at ${off}, which the top does not shadow`,
    );
  }
}

for (const kind of ['commit', 'mirror'] as const) {
  for (const state of ['created', 'running', 'paused', 'ready'] as const) {
    test(`${kind} cancelled when ${state}: the source holds every guest write and both images check clean`, async () => {
      const dir = tmpDir();
      try {
        const guest = new GuestModel(makeImages(dir, kind), 100 + state.length);
        const baseBefore = kind === 'commit' ? readImage(dir, `${dir}/base.qcow2`) : null;
        let ended = '';
        await withDaemon(dir, async (d) => {
          await addExportedImage(d, { name: 'disk', file: `${dir}/disk.qcow2` });
          if (kind === 'mirror') {
            ok(await d.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'tgt', file: { driver: 'file', filename: `${dir}/tgt.qcow2` } }));
          }
          ended = await cancelAt(d, kind, state, guest);
          assert.equal(await d.quit(), 0);
        });
        // QEMU: a mirror cancelled after READY without force finishes as COMPLETED (no pivot); all else is CANCELLED.
        assert.equal(ended, kind === 'mirror' && state === 'ready' ? 'BLOCK_JOB_COMPLETED' : 'BLOCK_JOB_CANCELLED');
        assertImageEquals(dir, `${dir}/disk.qcow2`, guest.model);
        if (kind === 'commit') {
          run('qemu-img', ['check', `${dir}/base.qcow2`]);
          // The base only gained data the top shadows: wherever it changed, the top has its own data.
          assertChangesShadowed(dir, baseBefore ?? Buffer.alloc(0), readImage(dir, `${dir}/base.qcow2`));
        } else {
          run('qemu-img', ['check', `${dir}/tgt.qcow2`]);
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }
}
