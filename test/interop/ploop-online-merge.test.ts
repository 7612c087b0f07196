// Online ploop merges as jobs with guest writes running during the copy, checked against a model
// of the disk's content; cancel before complete leaves the stack valid.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { openImage } from '../../src/block/index.js';
import type { BlockNode } from '../../src/block/index.js';
import { descriptorChain } from '../../src/formats/ploop/index.js';
import { createPloopMerge } from '../../src/jobs/ploop-merge.js';
import { buildStack, ok, qemuRead, withDir } from './ploop-helpers.js';

const SIZE = 4 * 1024 * 1024;
const WRITES = [
  ['write -P 0x11 0 1M', 'write -P 0x12 3M 256k'],
  ['write -P 0x21 512k 1M', 'write -P 0x22 3136k 64k'],
  ['write -P 0x31 128k 64k', 'write -P 0x32 2M 192k'],
];

/** Guest writes of varied sizes at pseudo-random offsets, applied to the disk and to the model. */
class Guest {
  #seed: number;
  constructor(
    public disk: BlockNode,
    readonly model: Buffer,
    seed: number,
  ) {
    this.#seed = seed;
  }
  #next(n: number): number {
    this.#seed = (this.#seed * 1103515245 + 12345) % 2 ** 31;
    return this.#seed % n;
  }
  async writes(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      const length = 512 * (1 + this.#next(256));
      const offset = 512 * this.#next((SIZE - length) / 512);
      const data = new Uint8Array(length).fill(1 + this.#next(255));
      this.model.set(data, offset);
      await this.disk.write(offset, data);
    }
  }
}

async function readAll(node: BlockNode): Promise<Buffer> {
  const buf = new Uint8Array(node.length);
  await node.read(0, buf);
  return Buffer.from(buf);
}

async function untilReady(job: ReturnType<typeof createPloopMerge>): Promise<void> {
  while (!job.ready) {
    assert.ok(job.status !== 'concluded' && job.status !== 'null', `job ended early: ${job.error ?? ''}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

for (const direction of ['backward', 'forward'] as const) {
  test(
    `online ${direction} merge with guest writes during the copy: the disk equals the model before and after complete`,
    withDir(async (dir) => {
      const { xml, files } = await buildStack(dir, SIZE, WRITES);
      let top = await openImage(xml);
      try {
        const guest = new Guest(top, await readAll(top), direction === 'backward' ? 7 : 11);
        // A low speed keeps the job copying while the guest writes.
        // The pivot is what the daemon's graph does: the guest's node is switched over.
        const pivot = async (_from: unknown, to: unknown): Promise<void> => {
          guest.disk = to as BlockNode;
        };
        const job = createPloopMerge({ id: 'j', top, direction, descriptor: xml, speed: 4 * 1024 * 1024, pivot });
        job.start();
        await Promise.all([guest.writes(60), untilReady(job)]);
        await guest.writes(20);
        assert.deepEqual(await readAll(top), guest.model);
        const racing = guest.writes(20);
        job.complete();
        await Promise.all([racing, job.wait()]);
        assert.equal(job.error, undefined);
        top = job.result ?? top;
        assert.deepEqual(await readAll(top), guest.model);
        await guest.writes(10);
        assert.equal(top.chain().length, 2);
        await top.close();
        const chain = (await descriptorChain(xml)).map((d) => d.file);
        assert.deepEqual(chain, direction === 'backward' ? files.slice(0, 2) : [files[0], files[2]]);
        assert.equal(fs.existsSync(files[direction === 'backward' ? 2 : 1] ?? ''), false);
        for (const f of chain) ok('qemu-img', ['check', '-f', 'parallels', f]);
        assert.deepEqual(qemuRead(dir, chain), guest.model);
      } finally {
        await top.close();
      }
    }),
  );
}

test(
  'an online backward merge cancelled before complete leaves the stack in use and valid',
  withDir(async (dir) => {
    const { xml, files } = await buildStack(dir, SIZE, WRITES);
    const top = await openImage(xml);
    try {
      const guest = new Guest(top, await readAll(top), 3);
      const job = createPloopMerge({ id: 'j', top, direction: 'backward', descriptor: xml, speed: 4 * 1024 * 1024 });
      job.start();
      await guest.writes(30);
      job.cancel();
      await job.wait();
      assert.equal(job.result, null);
      await guest.writes(10);
      assert.deepEqual(await readAll(top), guest.model);
      await top.close();
      assert.deepEqual((await descriptorChain(xml)).map((d) => d.file), files);
      for (const f of files) ok('qemu-img', ['check', '-f', 'parallels', f]);
      assert.deepEqual(qemuRead(dir, files), guest.model);
    } finally {
      await top.close();
    }
  }),
);
