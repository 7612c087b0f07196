// EIO and ENOSPC injected into real qcow2 chains under commit and stream: on the TARGET (the commit's base,
// the stream's top: its file cannot grow, or every write fails) and on the SOURCE (reads of the commit's top
// fail). Host files are wrapped in FaultHostFile through the qcow2 driver's openHost seam. The job must fail
// with the bare error text in BLOCK_JOB_COMPLETED and in its info (query-jobs), the guest's view must stay
// what it was, and after the faults are gone both images must pass qemu-img check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { BlockNode } from '../../src/block/node.js';
import { Qcow2Driver } from '../../src/formats/qcow2/qcow2-driver.js';
import { FaultHostFile, type FaultRule } from '../../src/host/fault-file.js';
import { NodeHostFile } from '../../src/host/node-file.js';
import { CommitJob } from '../../src/jobs/commit.js';
import type { Job, JobEvent } from '../../src/jobs/job.js';
import { StreamJob } from '../../src/jobs/stream.js';
import { run } from './support/serve-process.js';
import { MiB, readImage, tmpDir } from './support/e2e-daemon.js';

const SIZE = 8 * MiB;

interface FaultyChain {
  readonly base: BlockNode;
  readonly top: BlockNode;
  /** The writable host file of each image, by 'base' / 'top'. */
  readonly hosts: Map<string, FaultHostFile>;
}

/** base.qcow2 with data, top.qcow2 over it with its own; both opened read-write through FaultHostFiles. */
async function openFaultyChain(dir: string): Promise<FaultyChain> {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, String(SIZE)]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x12 6M 1M', `${dir}/base.qcow2`]);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', `${dir}/top.qcow2`]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 1M 3M', '-c', 'write -P 0x22 7M 512k', `${dir}/top.qcow2`]);
  const hosts = new Map<string, FaultHostFile>();
  const open = async (name: string): Promise<Qcow2Driver> =>
    Qcow2Driver.open(`${dir}/${name}.qcow2`, {
      readOnly: false,
      openHost: async (path, options) => {
        const inner = await NodeHostFile.open(path, options);
        if (options.readOnly) return inner;
        const host = new FaultHostFile(inner, { record: false });
        hosts.set(name, host);
        return host;
      },
    });
  const base = await BlockNode.attach(await open('base'));
  const top = await BlockNode.attach(await open('top'), { backing: base });
  return { base, top, hosts };
}

async function readAll(node: BlockNode): Promise<Buffer> {
  const buf = Buffer.alloc(node.length);
  await node.read(0, buf);
  return buf;
}

/** Runs `job` to its end; the error events and the final BLOCK_JOB_COMPLETED payload. */
async function runToEnd(job: Job): Promise<{ errors: JobEvent[]; completed: Record<string, unknown> | undefined }> {
  const errors: JobEvent[] = [];
  let completed: Record<string, unknown> | undefined;
  job.onEvent((e) => {
    if (e.event === 'BLOCK_JOB_ERROR') errors.push(e);
    if (e.event === 'BLOCK_JOB_COMPLETED') completed = e.data as unknown as Record<string, unknown>;
  });
  job.start();
  await job.wait();
  return { errors, completed };
}

const TEXT = { EIO: 'Input/output error', ENOSPC: 'No space left on device' } as const;

/** The rule of a fault: ENOSPC = the file cannot grow past its current end; EIO = every write fails. */
async function targetRule(host: FaultHostFile, code: 'EIO' | 'ENOSPC'): Promise<FaultRule> {
  return code === 'ENOSPC' ? { ops: ['write', 'truncate'], code, offset: await host.size() } : { ops: ['write'], code };
}

async function closeAndCheck(dir: string, chain: FaultyChain): Promise<void> {
  for (const h of chain.hosts.values()) h.clearFaults();
  // The qcow2 driver reports a write that failed since the last flush once, at the next flush (as fsync does);
  // that report is expected here and consumed before closing.
  for (const node of [chain.top, chain.base]) {
    await node.flush().catch((e: unknown) => assert.match(String((e as { code?: string }).code), /^(EIO|ENOSPC)$/));
  }
  await chain.top.close();
  run('qemu-img', ['check', `${dir}/base.qcow2`]);
  run('qemu-img', ['check', `${dir}/top.qcow2`]);
}

for (const code of ['EIO', 'ENOSPC'] as const) {
  test(`active commit whose base fails writes with ${code}: the job fails with "${TEXT[code]}", the top stays the guest's disk, both check clean`, async () => {
    const dir = tmpDir();
    try {
      const chain = await openFaultyChain(dir);
      const before = await readAll(chain.top);
      const base = chain.hosts.get('base');
      assert.ok(base);
      base.inject(await targetRule(base, code));
      const job = new CommitJob({ id: 'c', top: chain.top, active: true, autoDismiss: false, chunkSize: 256 * 1024 });
      const { errors, completed } = await runToEnd(job);
      assert.deepEqual(errors[0]?.data, { device: 'c', operation: 'write', action: 'report' });
      assert.equal(completed?.['error'], TEXT[code]);
      assert.equal(job.status, 'concluded');
      assert.equal(job.info().error, TEXT[code]);
      assert.deepEqual(await readAll(chain.top), before);
      await closeAndCheck(dir, chain);
      assert.deepEqual(readImage(dir, `${dir}/top.qcow2`), before);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`stream whose top fails writes with ${code}: the job fails with "${TEXT[code]}", the chain reads as before, both check clean`, async () => {
    const dir = tmpDir();
    try {
      const chain = await openFaultyChain(dir);
      const before = await readAll(chain.top);
      const top = chain.hosts.get('top');
      assert.ok(top);
      top.inject(await targetRule(top, code));
      const job = new StreamJob({ id: 's', top: chain.top, autoDismiss: false, chunkSize: 256 * 1024 });
      const { errors, completed } = await runToEnd(job);
      assert.deepEqual(errors[0]?.data, { device: 's', operation: 'write', action: 'report' });
      assert.equal(completed?.['error'], TEXT[code]);
      assert.equal(job.info().error, TEXT[code]);
      assert.equal(chain.top.backing, chain.base, 'a failed stream keeps the backing');
      assert.deepEqual(await readAll(chain.top), before);
      await closeAndCheck(dir, chain);
      assert.deepEqual(readImage(dir, `${dir}/top.qcow2`), before);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('active commit whose top (the source) fails reads with EIO: the job fails with a read error, both images check clean', async () => {
  const dir = tmpDir();
  try {
    const chain = await openFaultyChain(dir);
    const before = await readAll(chain.top);
    const top = chain.hosts.get('top');
    assert.ok(top);
    top.inject({ ops: ['read'], code: 'EIO' });
    const job = new CommitJob({ id: 'c', top: chain.top, active: true, autoDismiss: false, chunkSize: 256 * 1024 });
    const { errors, completed } = await runToEnd(job);
    assert.deepEqual(errors[0]?.data, { device: 'c', operation: 'read', action: 'report' });
    assert.equal(completed?.['error'], TEXT.EIO);
    top.clearFaults();
    assert.deepEqual(await readAll(chain.top), before);
    await closeAndCheck(dir, chain);
    assert.deepEqual(readImage(dir, `${dir}/top.qcow2`), before);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
