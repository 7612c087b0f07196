// Block jobs on real qcow2 chains while a guest keeps writing: afterwards the images hold exactly what the
// guest wrote (checked against a model with qemu-img compare) and qemu-img check finds them clean.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openImage } from '../../src/block/open.js';
import type { ImageNode } from '../../src/block/types.js';
import { CommitJob } from '../../src/jobs/commit.js';
import { MirrorJob } from '../../src/jobs/mirror.js';
import { StreamJob } from '../../src/jobs/stream.js';
import { GuestWriter, nextEvent, readAll } from '../unit/jobs/job-fixtures.js';
import { qemu, tempDir } from './cli-oracle.js';

const MiB = 1024 * 1024;

function chain(dir: string, layers: number): void {
  const run = (tool: 'qemu-img' | 'qemu-io', args: string[]): void => {
    const r = qemu(tool, dir, args);
    assert.equal(r.status, 0, r.stderr);
  };
  run('qemu-img', ['create', '-q', '-f', 'qcow2', 'l0.qcow2', '16M']);
  for (let i = 1; i < layers; i++) run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', `l${i - 1}.qcow2`, '-F', 'qcow2', `l${i}.qcow2`]);
  for (let i = 0; i < layers; i++) run('qemu-io', ['-c', `write -P ${0x10 + i} ${i * 3}M 4M`, '-c', `write -z ${i * 3 + 1}M 64k`, `l${i}.qcow2`]);
}

/** The image equals the model (qemu-img compare against a raw file) and checks clean. */
function assertImage(dir: string, file: string, model: Uint8Array): void {
  writeFileSync(join(dir, 'model.raw'), model);
  const cmp = qemu('qemu-img', dir, ['compare', '-F', 'raw', file, 'model.raw']);
  assert.equal(cmp.status, 0, `${file}: ${cmp.stdout}${cmp.stderr}`);
  const check = qemu('qemu-img', dir, ['check', file]);
  assert.equal(check.status, 0, `${file}: ${check.stdout}${check.stderr}`);
}

function info(dir: string, file: string): { 'backing-filename'?: string } {
  return JSON.parse(qemu('qemu-img', dir, ['info', '--output=json', file]).stdout) as { 'backing-filename'?: string };
}

test('active commit of a live qcow2 top into its base, then complete: the base holds every guest write', async () => {
  const t = tempDir();
  try {
    chain(t.dir, 2);
    const top = await openImage(join(t.dir, 'l1.qcow2'));
    const base = top.backing;
    assert.ok(base);
    const model = await readAll(top);
    let active: ImageNode = top;
    const job = new CommitJob({ id: 'c', top, active: true, pivot: async (_f, to) => void (active = to) });
    const ready = nextEvent(job, 'BLOCK_JOB_READY');
    job.start();
    const writers = [0, 1].map((i) => new GuestWriter(() => active, model, { offset: i * 8 * MiB, length: 8 * MiB, seed: 11 + i, delayMs: 1 }));
    await ready;
    await new Promise((r) => setTimeout(r, 50));
    job.complete();
    await job.wait();
    for (const w of writers) await w.stop();
    assert.equal(active, base);
    assert.equal(job.error, undefined);
    await base.close();
    assertImage(t.dir, 'l0.qcow2', model);
    assert.equal(qemu('qemu-img', t.dir, ['check', 'l1.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});

test('cancelling a live active commit when ready leaves both images clean and the top intact', async () => {
  const t = tempDir();
  try {
    chain(t.dir, 2);
    const top = await openImage(join(t.dir, 'l1.qcow2'));
    const model = await readAll(top);
    const job = new CommitJob({ id: 'c', top, active: true });
    const ready = nextEvent(job, 'BLOCK_JOB_READY');
    job.start();
    const writer = new GuestWriter(() => top, model, { offset: 0, length: 16 * MiB, seed: 5, delayMs: 1 });
    await ready;
    job.cancel();
    await job.wait();
    await writer.stop();
    assert.equal(top.backing?.readOnly, true, 'the base is read-only again');
    await top.close();
    assertImage(t.dir, 'l1.qcow2', model);
    assert.equal(qemu('qemu-img', t.dir, ['check', 'l0.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});

test('intermediate commit rewrites the overlay backing reference; the chain reads the same', async () => {
  const t = tempDir();
  try {
    chain(t.dir, 3);
    const top = await openImage(join(t.dir, 'l2.qcow2'));
    const mid = top.backing;
    const base = mid?.backing;
    assert.ok(mid && base);
    const model = await readAll(top);
    const job = new CommitJob({ id: 'c', top: mid, base, active: false, overlay: top, backingFile: 'l0.qcow2' });
    job.start();
    await job.wait();
    assert.equal(job.error, undefined);
    await top.close();
    assert.equal(info(t.dir, 'l2.qcow2')['backing-filename'], 'l0.qcow2');
    assertImage(t.dir, 'l2.qcow2', model);
  } finally {
    t.cleanup();
  }
});

test('stream of a live qcow2 chain into the top drops the backing images', async () => {
  const t = tempDir();
  try {
    chain(t.dir, 3);
    const top = await openImage(join(t.dir, 'l2.qcow2'));
    const model = await readAll(top);
    const job = new StreamJob({ id: 's', top });
    job.start();
    const writer = new GuestWriter(() => top, model, { offset: 0, length: 16 * MiB, seed: 9, delayMs: 1 });
    await job.wait();
    await writer.stop();
    assert.equal(job.error, undefined);
    await top.close();
    assert.equal(info(t.dir, 'l2.qcow2')['backing-filename'], undefined);
    assertImage(t.dir, 'l2.qcow2', model);
  } finally {
    t.cleanup();
  }
});

for (const copyMode of ['background', 'write-blocking'] as const) {
  test(`mirror (${copyMode}) of a live chain to a new qcow2, then complete: the target holds every guest write`, async () => {
    const t = tempDir();
    try {
      chain(t.dir, 2);
      assert.equal(qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'target.qcow2', '16M']).status, 0);
      const source = await openImage(join(t.dir, 'l1.qcow2'));
      const target = await openImage(join(t.dir, 'target.qcow2'));
      const model = await readAll(source);
      let active: ImageNode = source;
      const job = new MirrorJob({ id: 'm', source, target, sync: 'full', copyMode, targetIsZero: true, pivot: async (_f, to) => void (active = to) });
      const ready = nextEvent(job, 'BLOCK_JOB_READY');
      job.start();
      const writer = new GuestWriter(() => active, model, { offset: 0, length: 16 * MiB, seed: 21, delayMs: 1 });
      await ready;
      await new Promise((r) => setTimeout(r, 50));
      job.complete();
      await job.wait();
      await writer.stop();
      assert.equal(active, target);
      await source.close();
      await target.close();
      assertImage(t.dir, 'target.qcow2', model);
    } finally {
      t.cleanup();
    }
  });
}
