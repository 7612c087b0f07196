// Block jobs copying between host files with copy_file_range (NodeCopier, BlockNode.copyViaHost): the
// images come out as qemu-img compare and check want them, for targets of other cluster sizes (partial
// clusters: host ranges mixed with COW buffers), subclusters and raw; with the kernel path turned off
// the same jobs copy through memory and leave the same images.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { openImage } from '../../src/block/open.js';
import { NodeHostFile } from '../../src/host/node-file.js';
import type { HostRange } from '../../src/host/host-file.js';
import { CommitJob } from '../../src/jobs/commit.js';
import { MirrorJob } from '../../src/jobs/mirror.js';
import { nextEvent } from '../unit/jobs/job-fixtures.js';
import { qemu, tempDir } from './cli-oracle.js';

function run(dir: string, tool: 'qemu-img' | 'qemu-io', args: string[]): void {
  const r = qemu(tool, dir, args);
  assert.equal(r.status, 0, r.stdout + r.stderr);
}

/** base <- top (64 KiB clusters): data runs, compressed clusters, zeros, partial clusters, data left in the base. */
function sourceChain(dir: string): void {
  run(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '12M']);
  run(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
  run(dir, 'qemu-io', ['-c', 'write -P 0x11 0 6M', '-c', 'write -c -P 0x12 8M 256k', 'base.qcow2']);
  run(dir, 'qemu-io', ['-c', 'write -P 0x21 1M 3M', '-c', 'write -z 2M 128k', '-c', 'write -P 0x22 5M 4k', '-c', 'write -P 0x23 9M 1M', 'top.qcow2']);
  run(dir, 'qemu-io', ['-c', 'write -c -P 0x24 10M 128k', '-c', 'write -P 0x25 11M 70k', 'top.qcow2']);
}

/** Counts the bytes NodeHostFile.copyFrom is asked to copy while `body` runs. */
async function countingCopies(body: () => Promise<void>): Promise<number> {
  const proto = NodeHostFile.prototype;
  const original = proto.copyFrom;
  let bytes = 0;
  proto.copyFrom = function (this: NodeHostFile, src: HostRange, offset: number): Promise<void> {
    bytes += src.length;
    return original.call(this, src, offset);
  };
  try {
    await body();
  } finally {
    proto.copyFrom = original;
  }
  return bytes;
}

async function withoutHostCopy<T>(off: boolean, body: () => Promise<T>): Promise<T> {
  const saved = process.env['VDISK_NO_HOST_COPY'];
  if (off) process.env['VDISK_NO_HOST_COPY'] = '1';
  try {
    return await body();
  } finally {
    if (saved === undefined) delete process.env['VDISK_NO_HOST_COPY'];
    else process.env['VDISK_NO_HOST_COPY'] = saved;
  }
}

const TARGETS = [
  { name: 'qcow2 64k', create: ['-f', 'qcow2'] },
  { name: 'qcow2 2M clusters', create: ['-f', 'qcow2', '-o', 'cluster_size=2M'] },
  { name: 'qcow2 4k clusters', create: ['-f', 'qcow2', '-o', 'cluster_size=4k'] },
  { name: 'qcow2 subclusters', create: ['-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=128k'] },
  { name: 'raw', create: ['-f', 'raw'] },
] as const;

for (const target of TARGETS) {
  for (const kernel of [true, false]) {
    test(`mirror sync=full to ${target.name} ${kernel ? 'through copy_file_range' : 'through memory (host copy off)'}: the target compares equal and checks clean`, async () => {
      const t = tempDir();
      try {
        sourceChain(t.dir);
        const format = target.create[1];
        const file = `target.${format}`;
        run(t.dir, 'qemu-img', ['create', '-q', ...target.create, file, '12M']);
        const copied = await withoutHostCopy(!kernel, () =>
          countingCopies(async () => {
            const source = await openImage(join(t.dir, 'top.qcow2'));
            const dest = await openImage(join(t.dir, file), { format });
            const job = new MirrorJob({ id: 'm', source, target: dest, sync: 'full', targetIsZero: true });
            const ready = nextEvent(job, 'BLOCK_JOB_READY');
            job.start();
            await ready;
            job.complete();
            await job.wait();
            assert.equal(job.error, undefined);
            await source.close();
            await dest.close();
          }),
        );
        if (kernel) assert.ok(copied >= 6 * 1024 * 1024, `copied ${copied} bytes through the kernel`);
        else assert.equal(copied, 0);
        const cmp = qemu('qemu-img', t.dir, ['compare', '-f', 'qcow2', '-F', format, 'top.qcow2', file]);
        assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
        if (format === 'qcow2') run(t.dir, 'qemu-img', ['check', file]);
      } finally {
        t.cleanup();
      }
    });
  }
}

test('commit of a qcow2 top into its base through copy_file_range leaves the chain reading the same, clean', async () => {
  const t = tempDir();
  try {
    sourceChain(t.dir);
    run(t.dir, 'qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', 'top.qcow2', 'before.raw']);
    const copied = await countingCopies(async () => {
      const top = await openImage(join(t.dir, 'top.qcow2'));
      const job = new CommitJob({ id: 'c', top, active: false });
      job.start();
      await job.wait();
      assert.equal(job.error, undefined);
      await top.close();
    });
    assert.ok(copied >= 4 * 1024 * 1024, `copied ${copied} bytes through the kernel`);
    for (const f of ['top.qcow2', 'base.qcow2']) run(t.dir, 'qemu-img', ['check', f]);
    // The base now holds what the top showed.
    const cmp = qemu('qemu-img', t.dir, ['compare', '-f', 'qcow2', '-F', 'raw', 'base.qcow2', 'before.raw']);
    assert.equal(cmp.status, 0, cmp.stdout + cmp.stderr);
  } finally {
    t.cleanup();
  }
});
