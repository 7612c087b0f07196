import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { NodeHostFile } from '../../../src/host/node-file.js';
import { workerReadRing } from '../../../src/host/worker-reads.js';

// Small requests first try preadv2/pwritev2(RWF_NOWAIT) on the JS thread; these
// check that the fast path and its fallbacks give the same bytes as the pool path.
test('small reads of cached data, reads across the end of the file and small writes return the same bytes as large ones', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const file = path.join(dir, 'f');
    const content = Buffer.alloc(256 * 1024);
    for (let i = 0; i < content.length; i++) content[i] = (i * 7 + 3) & 0xff;
    fs.writeFileSync(file, content);
    const host = await NodeHostFile.open(file);
    try {
      const small = new Uint8Array(4096);
      await host.read(small, 8192 + 17);
      assert.deepEqual(Buffer.from(small), content.subarray(8192 + 17, 8192 + 17 + 4096));

      const tail = new Uint8Array(4096).fill(0xee);
      await host.read(tail, content.length - 1000);
      assert.deepEqual(Buffer.from(tail.subarray(0, 1000)), content.subarray(content.length - 1000));
      assert.ok(tail.subarray(1000).every((b) => b === 0), 'bytes past the end of the file read as zeros');

      const past = new Uint8Array(512).fill(0xee);
      await host.read(past, content.length + 4096);
      assert.ok(past.every((b) => b === 0));

      const data = new Uint8Array(4096).fill(0x5a);
      await host.write(data, 4096 * 3 + 1);
      const big = new Uint8Array(128 * 1024);
      await host.read(big, 0);
      const expected = Buffer.from(content.subarray(0, big.length));
      expected.fill(0x5a, 4096 * 3 + 1, 4096 * 4 + 1);
      assert.deepEqual(Buffer.from(big), expected);
    } finally {
      await host.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// With inlineIo (convert's files) requests of a whole copy chunk take the
// synchronous paths: they must give the bytes the pool path gives.
test('an inlineIo file reads and writes 2 MiB requests, across the end of the file too, as the pool path does', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const file = path.join(dir, 'f');
    const MiB = 1024 * 1024;
    const content = Buffer.alloc(3 * MiB);
    for (let i = 0; i < content.length; i++) content[i] = (i * 13 + 5) & 0xff;
    fs.writeFileSync(file, content);
    const inline = await NodeHostFile.open(file, { inlineIo: true });
    const pooled = await NodeHostFile.open(file, { readOnly: true });
    try {
      const a = new Uint8Array(2 * MiB);
      const b = new Uint8Array(2 * MiB);
      await inline.read(a, 12345);
      await pooled.read(b, 12345);
      assert.deepEqual(a, b);

      const tail = new Uint8Array(2 * MiB).fill(0xee);
      await inline.read(tail, 2 * MiB);
      assert.deepEqual(Buffer.from(tail.subarray(0, MiB)), content.subarray(2 * MiB));
      assert.ok(tail.subarray(MiB).every((x) => x === 0), 'bytes past the end of the file read as zeros');

      const data = new Uint8Array(2 * MiB).fill(0xa5);
      await inline.writev([data.subarray(0, MiB), data.subarray(MiB)], 3 * MiB + 512);
      await inline.write(data, 512);
      const back = new Uint8Array(5 * MiB + 512);
      await pooled.read(back, 0);
      const expected = Buffer.alloc(back.length);
      content.copy(expected);
      expected.fill(0xa5, 512, 2 * MiB + 512);
      expected.fill(0xa5, 3 * MiB + 512);
      assert.deepEqual(Buffer.from(back), expected);
    } finally {
      await inline.close();
      await pooled.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('whole 1 MiB reads (a block job chunk) of cached data and across the end of the file give the bytes of the file', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const file = path.join(dir, 'f');
    const MiB = 1024 * 1024;
    const content = Buffer.alloc(MiB + MiB / 2);
    for (let i = 0; i < content.length; i++) content[i] = (i * 13 + 5) & 0xff;
    fs.writeFileSync(file, content);
    const host = await NodeHostFile.open(file);
    try {
      const whole = new Uint8Array(MiB);
      await host.read(whole, 4096);
      assert.deepEqual(Buffer.from(whole), content.subarray(4096, 4096 + MiB));
      const across = new Uint8Array(MiB).fill(0xee);
      await host.read(across, MiB);
      assert.deepEqual(Buffer.from(across.subarray(0, MiB / 2)), content.subarray(MiB));
      assert.ok(across.subarray(MiB / 2).every((b) => b === 0), 'bytes past the end of the file read as zeros');
    } finally {
      await host.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// Large reads of an inlineIo file go to io_uring's kernel workers, a few at a
// time (worker-reads.ts): many at once, some past the end of the file, must
// each get their own bytes.
test("an inlineIo file's concurrent large reads go to the worker ring and each gets its own bytes, zeros past the end", async (t) => {
  const ring = workerReadRing();
  if (ring === null) {
    t.skip('no io_uring here (or VDISK_WORKER_READS=0)');
    return;
  }
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const file = path.join(dir, 'f');
    const KiB = 1024;
    const content = Buffer.alloc(2048 * KiB + 1000);
    for (let i = 0; i < content.length; i++) content[i] = (i * 31 + (i >> 12)) & 0xff;
    fs.writeFileSync(file, content);
    const host = await NodeHostFile.open(file, { inlineIo: true, readOnly: true });
    try {
      const offsets = [0, 4096, 100_000, 512 * KiB, 1024 * KiB + 7, 1792 * KiB, 1900 * KiB, 2048 * KiB, 3000 * KiB, 1];
      const bufs = offsets.map(() => new Uint8Array(256 * KiB).fill(0xee));
      const before = ring.inFlight;
      const reads = offsets.map((off, i) => host.read(bufs[i] ?? new Uint8Array(0), off));
      assert.equal(ring.inFlight - before, offsets.length, 'every read was handed to the ring');
      await Promise.all(reads);
      offsets.forEach((off, i) => {
        const expected = Buffer.alloc(256 * KiB);
        if (off < content.length) content.copy(expected, 0, off, Math.min(content.length, off + expected.length));
        assert.deepEqual(Buffer.from(bufs[i] ?? []), expected, `read at ${off}`);
      });
      const small = new Uint8Array(4096);
      await host.read(small, 8);
      assert.equal(ring.inFlight, before, 'nothing left in flight');
      assert.deepEqual(Buffer.from(small), content.subarray(8, 8 + 4096));
    } finally {
      await host.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
