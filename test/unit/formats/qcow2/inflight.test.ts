/**
 * Many requests in flight on the qcow2 engine: COW cancellation of sequential
 * writes, reads in the window before the L2 update, per-table progress with a
 * stalled L2 table, and injected host errors. qemu-img check and qemu-img
 * convert are the oracles of the on-disk result.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createQcow2 } from '../../../../src/formats/qcow2/create.js';
import { Qcow2Driver } from '../../../../src/formats/qcow2/qcow2-driver.js';
import { InflightTable } from '../../../../src/formats/qcow2/inflight.js';
import { FaultHostFile } from '../../../../src/host/fault-file.js';
import { NodeHostFile } from '../../../../src/host/node-file.js';
import type { HostOpenOptions } from '../../../../src/host/host-file.js';
import { qemuCheck, tmpDir } from '../../../crash/image-helpers.js';

function pattern(seed: number, length: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (seed * 31 + i * 7 + (i >> 9)) & 0xff;
  return b;
}

/** Runs `count` writes of `size` bytes from `start`, back to back, `depth` at a time. */
async function sequentialWrites(d: Qcow2Driver, o: { start: number; size: number; count: number; depth: number }, expected: Uint8Array): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < o.count) {
      const i = next++;
      const data = pattern(i + 1, o.size);
      expected.set(data, o.start + i * o.size);
      await d.write(o.start + i * o.size, data);
    }
  };
  await Promise.all(Array.from({ length: o.depth }, worker));
}

function qemuRaw(file: string): Buffer {
  const out = `${file}.raw`;
  execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, out]);
  const data = fs.readFileSync(out);
  fs.rmSync(out);
  return data;
}

/** Opens `file` for writing with its host file wrapped in a FaultHostFile (`f`). */
async function openWithFaults(file: string, tuning: { l2CacheSize?: number } = {}): Promise<{ d: Qcow2Driver; f: FaultHostFile }> {
  let fault: FaultHostFile | null = null;
  const d = await Qcow2Driver.open(file, {
    readOnly: false,
    qcow2Tuning: tuning,
    openHost: async (p: string, o: HostOpenOptions) => {
      const h = await NodeHostFile.open(p, o);
      if (o.readOnly) return h;
      fault = new FaultHostFile(h, { record: false });
      return fault;
    },
  });
  assert.ok(fault);
  return { d, f: fault };
}

/** Whether the driver reads `expected` from the start of the disk. */
async function readsBack(d: Qcow2Driver, expected: Uint8Array): Promise<boolean> {
  const back = new Uint8Array(expected.length);
  await d.read(0, back);
  return Buffer.from(back).equals(Buffer.from(expected));
}

/** qemu-img check finds nothing wrong with `file` and qemu-img reads `expected` from it. */
function assertCleanWith(file: string, expected: Uint8Array): void {
  const c = qemuCheck(file);
  assert.deepEqual({ corruptions: c.corruptions, leaks: c.leaks, checkErrors: c.checkErrors }, { corruptions: 0, leaks: 0, checkErrors: 0 });
  assert.ok(qemuRaw(file).equals(Buffer.from(expected)), 'qemu-img reads what was written');
}

for (const ext of [false, true]) {
  for (const start of [512, 0]) {
    const what = start === 0 ? 'aligned' : 'unaligned';
    test(`sequential ${what} allocating writes at depth 16 never wait on a COW they overwrite${ext ? ' (extended L2)' : ''}`, async () => {
      const dir = tmpDir();
      try {
        const file = path.join(dir, 'a.qcow2');
        const size = 4 * 1024 * 1024;
        await createQcow2(file, { size, options: ext ? { extended_l2: 'on', cluster_size: '65536' } : {} });
        // The seed's case: cache=none. (With writeback, small writes complete on the JS thread
        // while the page cache takes them quickly, so fewer writes overlap to begin with.)
        const d = await Qcow2Driver.open(file, { readOnly: false, cache: 'none' });
        const expected = new Uint8Array(size);
        try {
          await sequentialWrites(d, { start, size: 4096, count: 600, depth: 16 }, expected);
          const s = d.stats();
          assert.equal(s.cowWaits, 0, `COW waits: ${JSON.stringify(s)}`);
          assert.equal(s.allocationWaits, 0, `allocation waits: ${JSON.stringify(s)}`);
          assert.ok(s.cowCancellations > 500, `cancellations: ${JSON.stringify(s)}`);
          // Read back through the engine before the flush (some clusters may not be linked yet).
          assert.ok(await readsBack(d, expected), 'engine reads back what was written');
          // Each write ending a cluster closed its tail, so the flush found at most the stream's
          // last tail to write (none when the stream ends on a cluster boundary).
          await d.flush();
          assert.ok(d.stats().tailWrites <= 1, `tail writes: ${JSON.stringify(d.stats())}`);
        } finally {
          await d.close();
        }
        assertCleanWith(file, expected);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }
}

test('a read in the window before the L2 update returns the joined write data', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'w.qcow2');
    await createQcow2(file, { size: 1024 * 1024, options: {} });
    const { d, f } = await openWithFaults(file);
    try {
      // Fresh image, 64 KiB clusters: L2 table at 0x40000, first data cluster at 0x50000.
      const stall = f.stall({ offset: 0x50000, length: 512 }, ['write']);
      const a = pattern(1, 4096);
      const b = pattern(2, 4096);
      const wa = d.write(512, a);
      const wb = d.write(4608, b);
      await wb;
      assert.equal(d.stats().cowCancellations, 1);
      const back = new Uint8Array(4096);
      await d.read(4608, back);
      assert.ok(Buffer.from(back).equals(Buffer.from(b)), 'B reads back while A is still on its way');
      const head = new Uint8Array(512);
      await d.read(0, head);
      assert.ok(head.every((x) => x === 0));
      stall.release();
      await wa;
      const all = new Uint8Array(8192 + 512);
      await d.read(0, all);
      assert.ok(Buffer.from(all.subarray(512, 4608)).equals(Buffer.from(a)));
      assert.ok(Buffer.from(all.subarray(4608, 8704)).equals(Buffer.from(b)));
    } finally {
      await d.close();
    }
    assert.equal(qemuCheck(file).status, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** Writes through `d`, recording each write's data in `expected` first. */
function writerInto(d: Qcow2Driver, expected: Uint8Array): (at: number, data: Uint8Array) => Promise<void> {
  return (at, data) => {
    expected.set(data, at);
    return d.write(at, data);
  };
}

/** Lets the event loop turn a few times (host calls and their callbacks run). */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

test('a write that would join an allocation in flight waits while an earlier write waits to plan in the same table', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'q.qcow2');
    // 4 KiB clusters (one L2 table maps 2 MiB), room for four L2 tables in the cache (the least).
    const C = 4096;
    const span = 2 * 1024 * 1024;
    await createQcow2(file, { size: 8 * span, options: { cluster_size: '4096' } });
    const { d, f } = await openWithFaults(file, { l2CacheSize: 4 * C });
    const expected = new Uint8Array(8 * span);
    const put = writerInto(d, expected);
    // Released on the way out whatever happens, so a failed assertion does not leave close() waiting.
    const holds: { release: () => void }[] = [];
    try {
      // Fresh image: L2 table 0 at 0x4000, cluster 0 at 0x5000, cluster 1 at 0x6000.
      await put(C - 512, pattern(1, 512));
      // A continues the stream into cluster 1 and keeps its tail for the next write; its data is held.
      const heldA = f.stall({ offset: 0x6000, length: 512 }, ['write']);
      holds.push(heldA);
      const a = put(C, pattern(2, 1024));
      await turns();
      assert.equal(heldA.hits(), 1);
      // Four other tables push table 0 out of the cache; its next read is held.
      await Promise.all([1, 2, 3, 4].map((t) => put(t * span, pattern(2 + t, 512))));
      const heldTable = f.stall({ offset: 0x4000, length: C }, ['read']);
      holds.push(heldTable);
      const w = put(10 * C, pattern(8, 512));
      await turns();
      assert.equal(heldTable.hits(), 1, 'W waits for table 0');
      // Q (the rest of the cluster: no tail to write) could join A's allocation at once, but W
      // entered table 0 first.
      let qDone = false;
      const q = put(C + 1024, pattern(9, C - 1024)).then(() => (qDone = true));
      await turns();
      assert.equal(qDone, false, 'Q waits for W to plan');
      heldTable.release();
      await Promise.all([w, q]);
      assert.equal(d.stats().cowCancellations, 1, 'Q joined A');
      assert.equal(d.stats().cowWaits, 0);
      heldA.release();
      await a;
      assert.ok(await readsBack(d, expected));
    } finally {
      for (const h of holds) h.release();
      await d.close();
    }
    assertCleanWith(file, expected);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an allocation is linked only once the data of every write that joined it has landed', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'l.qcow2');
    const C = 65536;
    await createQcow2(file, { size: 16 * C, options: {} });
    const { d, f } = await openWithFaults(file);
    const expected = new Uint8Array(16 * C);
    const put = writerInto(d, expected);
    const holds: { release: () => void }[] = [];
    try {
      // The end of cluster 0 (L2 table at 0x40000, cluster 0 at 0x50000), then a stream into
      // cluster 1 (0x60000): A allocates it and keeps its tail, B joins; B's data is held.
      await put(C - 512, pattern(1, 512));
      const heldB = f.stall({ offset: 0x61000, length: 512 }, ['write']);
      holds.push(heldB);
      const a = put(C, pattern(2, 4096));
      const b = put(C + 4096, pattern(3, 4096));
      await a;
      await turns();
      assert.equal(heldB.hits(), 1);
      assert.equal(d.stats().cowCancellations, 1);
      // A flush settles every allocation: this one must wait for B's data before its L2 entry is
      // written (else the entry would map bytes that are not on the disk yet).
      let flushed = false;
      const flush = d.flush().then(() => (flushed = true));
      // Long enough for the flush's own host syncs (the correct engine never finishes it while B is held).
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(flushed, false, 'not linked while B is on its way');
      heldB.release();
      await Promise.all([b, flush]);
      assert.ok(await readsBack(d, expected));
    } finally {
      for (const h of holds) h.release();
      await d.close();
    }
    assertCleanWith(file, expected);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * A qcow2 image of 64 KiB clusters in `dir` over a raw base of `size` bytes of 0x5a, opened with
 * faults; the driver alone does not open its chain (the block layer does), so the base goes in as
 * a source.
 */
async function openOverBase(dir: string, size: number): Promise<{ file: string; d: Qcow2Driver; f: FaultHostFile; baseHost: NodeHostFile }> {
  const base = path.join(dir, 'base.raw');
  const file = path.join(dir, 'top.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', base, String(size)]);
  execFileSync('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a 0 ${size}`, base]);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', base, '-F', 'raw', file]);
  const { d, f } = await openWithFaults(file);
  const baseHost = await NodeHostFile.open(base, { readOnly: true });
  d.setBacking({ length: size, read: (offset, buf) => baseHost.read(buf, offset) });
  return { file, d, f, baseHost };
}

test('writes joining an allocation copy what only the backing file holds: a gap before them, a tail after them', async () => {
  const dir = tmpDir();
  try {
    const C = 65536;
    const size = 16 * C;
    const { file, d, baseHost } = await openOverBase(dir, size);
    const expected = new Uint8Array(size).fill(0x5a);
    const put = writerInto(d, expected);
    try {
      await put(C - 512, pattern(1, 512));
      // A continues the stream into cluster 1 and keeps its tail; Q writes the cluster's last
      // 56 KiB, leaving [C + 4 KiB, C + 8 KiB) between them.
      const a = put(C, pattern(2, 4096));
      const q = put(C + 8192, pattern(3, C - 8192));
      await Promise.all([a, q]);
      await put(3 * C - 512, pattern(4, 512));
      // The same in cluster 3, but R starts where A2 ended, after a write elsewhere: nothing is
      // expected behind R, so the rest of the cluster goes out with it.
      const a2 = put(3 * C, pattern(5, 4096));
      const x = put(10 * C, pattern(6, 512));
      const r = put(3 * C + 4096, pattern(7, 4096));
      await Promise.all([a2, x, r]);
      await d.flush();
      assert.deepEqual({ joins: d.stats().cowCancellations, tails: d.stats().tailWrites }, { joins: 2, tails: 0 }, 'Q and R joined and closed the tails');
      assert.ok(await readsBack(d, expected));
    } finally {
      await d.close();
      await baseHost.close();
    }
    assertCleanWith(file, expected);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writes joining an allocation whose cluster cannot be placed fail with it; the image stays consistent', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'p.qcow2');
    // 512-byte clusters: a refcount block covers 128 KiB of the file, so the stream soon needs a
    // new one, whose refcount table entry cannot be written.
    await createQcow2(file, { size: 1024 * 1024, options: { cluster_size: '512' } });
    const refcountTable = Number(fs.readFileSync(file).readBigUInt64BE(48));
    const { d, f } = await openWithFaults(file);
    f.inject({ ops: ['write'], code: 'EIO', offset: refcountTable, length: 512, times: 1 });
    const expected = new Uint8Array(1024 * 1024);
    let failedAt = -1;
    try {
      // Each cluster in two halves, issued together: the second joins the first's allocation,
      // which for the cluster that needs a new refcount block does not know its host cluster yet
      // (the others are placed in the call that plans them: Refcounts.allocRunNow).
      for (let k = 0; k < 2048 && failedAt < 0; k++) {
        const first = pattern(2 * k, 256);
        const second = pattern(2 * k + 1, 256);
        const both = await Promise.allSettled([d.write(k * 512, first), d.write(k * 512 + 256, second)]);
        const failed = both.filter((r) => r.status === 'rejected');
        if (failed.length === 0) {
          expected.set(first, k * 512);
          expected.set(second, k * 512 + 256);
          continue;
        }
        failedAt = k;
        assert.equal(failed.length, 2, 'the joined write fails with the allocation');
        for (const r of failed) assert.equal((r.reason as { code?: string }).code, 'EIO');
      }
      assert.ok(failedAt > 0, 'the stream met the injected failure');
      assert.equal(d.stats().cowCancellations, failedAt + 1, 'every second half joined');
      // The failure was reported to both writers, and to them only: the flush has nothing to add.
      f.clearFaults();
      await d.flush();
      const after = pattern(7, 512);
      expected.set(after, failedAt * 512);
      await d.write(failedAt * 512, after);
      await d.flush();
      assert.ok(await readsBack(d, expected));
    } finally {
      await d.close().catch(() => undefined);
    }
    const c = qemuCheck(file);
    assert.deepEqual({ corruptions: c.corruptions, checkErrors: c.checkErrors }, { corruptions: 0, checkErrors: 0 });
    assert.ok(qemuRaw(file).equals(Buffer.from(expected)), 'qemu-img reads what was written');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a write that completed but whose allocation failed afterwards (its tail COW) is reported by the next flush, once', async () => {
  const dir = tmpDir();
  try {
    const C = 65536;
    const size = 4 * C;
    const { file, d, f, baseHost } = await openOverBase(dir, size);
    try {
      // Cluster 0 goes at 0x50000 (after the L2 table at 0x40000) and cluster 1 at 0x60000. The
      // second write continues the first's stream, so its tail, copied from the base, is left
      // for a write that may follow: [0x61000, 0x70000), written once nothing did.
      f.inject({ ops: ['write'], code: 'EIO', offset: 0x61000, length: C - 4096, times: 1 });
      const expected = new Uint8Array(size).fill(0x5a);
      const first = pattern(1, 512);
      expected.set(first, C - 512);
      await d.write(C - 512, first);
      await d.write(C, pattern(2, 4096));
      await assert.rejects(d.flush(), (e: unknown) => (e as { code?: string }).code === 'EIO', 'the completed write was lost');
      await d.flush();
      // Never linked: the guest reads the base there.
      assert.ok(await readsBack(d, expected));
    } finally {
      await d.close();
      await baseHost.close();
    }
    const c = qemuCheck(file);
    assert.deepEqual({ corruptions: c.corruptions, checkErrors: c.checkErrors }, { corruptions: 0, checkErrors: 0 });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('overwrites of data in place take no allocation record; a discard of their cluster waits for them', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'o.qcow2');
    const C = 65536;
    await createQcow2(file, { size: 16 * C, options: {} });
    // Clusters 0-3 back to back on the host; 7 then 6, so 6 and 7 are not in host order.
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 1 0 ${4 * C}`, '-c', `write -P 1 ${7 * C} ${C}`, '-c', `write -P 1 ${6 * C} ${C}`, file]);
    const map = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'qcow2', file], { encoding: 'utf8' })) as { start: number; length: number; data: boolean; offset?: number }[];
    const hostOfCluster2 = (map.find((e) => e.data && e.start <= 2 * C && e.start + e.length > 2 * C)?.offset ?? -1) + 2 * C;
    assert.ok(hostOfCluster2 > 2 * C);
    const { d, f } = await openWithFaults(file);
    const expected = new Uint8Array(16 * C);
    expected.fill(1, 0, 4 * C);
    expected.fill(1, 6 * C, 8 * C);
    try {
      // Sixteen overwrites in flight at once, inside clusters and across a cluster boundary.
      const writes: Promise<void>[] = [];
      for (let i = 0; i < 16; i++) {
        const at = i === 15 ? C - 700 : i * 13_001 + 17;
        const data = pattern(i + 10, 1400);
        expected.set(data, at);
        writes.push(d.write(at, data));
      }
      await Promise.all(writes);
      assert.equal(d.stats().allocations, 0, 'no overwrite in place allocated');
      // Across clusters that are not in host order the planned path takes the write: still no record.
      const across = pattern(45, 5000);
      expected.set(across, 7 * C - 2000);
      await d.write(7 * C - 2000, across);
      assert.equal(d.stats().allocations, 0, 'no overwrite in place allocated');
      // Reads of plain data take the direct path too, inside one cluster and across host-contiguous ones.
      const one = new Uint8Array(1400);
      await d.read(13_018, one);
      assert.ok(Buffer.from(one).equals(Buffer.from(expected.subarray(13_018, 14_418))));
      const three = new Uint8Array(3 * C);
      await d.read(1000, three);
      assert.ok(Buffer.from(three).equals(Buffer.from(expected.subarray(1000, 1000 + 3 * C))));
      const split = new Uint8Array(4000);
      await d.read(7 * C - 1000, split);
      assert.ok(Buffer.from(split).equals(Buffer.from(expected.subarray(7 * C - 1000, 7 * C + 3000))));
      const fresh = pattern(40, 3000);
      expected.set(fresh, 5 * C + 100);
      await d.write(5 * C + 100, fresh);
      assert.equal(d.stats().allocations, 1, 'the write to an empty cluster did');

      // An overwrite across clusters 1 and 2 whose host write is held, then a discard of cluster 2:
      // the discard waits for it (else it could free the cluster under the write), and ends last.
      const stall = f.stall({ offset: hostOfCluster2, length: 4096 }, ['write']);
      const order: string[] = [];
      const held = pattern(50, 8192);
      expected.set(held, 2 * C - 4096);
      const overwrite = d.write(2 * C - 4096, held).then(() => order.push('write'));
      const discard = d.discard(2 * C, C).then(() => order.push('discard'));
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      assert.deepEqual(order, [], 'both wait for the held host write');
      assert.ok(stall.hits() >= 1);
      const still = new Uint8Array(512);
      await d.read(2 * C + 20_000, still);
      assert.ok(still.every((x) => x === 1), 'the discard has not changed the mapping under the write');
      stall.release();
      await Promise.all([overwrite, discard]);
      assert.deepEqual(order, ['write', 'discard']);
      expected.fill(0, 2 * C, 3 * C);
      assert.ok(await readsBack(d, expected), 'the engine reads back every write and the discard');
    } finally {
      await d.close();
    }
    assertCleanWith(file, expected);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** L2 table offsets of an image, from its L1 table. */
function l2Tables(file: string): number[] {
  const buf = fs.readFileSync(file);
  const l1Size = buf.readUInt32BE(36);
  const l1Offset = Number(buf.readBigUInt64BE(40));
  const out: number[] = [];
  for (let i = 0; i < l1Size; i++) out.push(Number(buf.readBigUInt64BE(l1Offset + i * 8) & 0x00fffffffffffe00n));
  return out;
}

test('with I/O stalled on one L2 table, requests touching other L2 tables complete', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 's.qcow2');
    // 4 KiB clusters: one L2 table maps 2 MiB.
    const span = 2 * 1024 * 1024;
    await createQcow2(file, { size: 4 * span, options: { cluster_size: '4096' } });
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 1 0 64k`, '-c', `write -P 2 ${span} 64k`, '-c', `write -P 3 ${2 * span} 64k`, file]);
    const tables = l2Tables(file);
    const t0 = tables[0];
    assert.ok(t0 !== undefined && t0 > 0);
    const { d, f } = await openWithFaults(file);
    try {
      const stall = f.stall({ offset: t0, length: 4096 }, ['read', 'write']);
      let stalledDone = false;
      const stalledRead = d.read(0, new Uint8Array(4096)).then(() => (stalledDone = true));
      const stalledWrite = d.write(8192, pattern(9, 4096));
      // Other tables: reads, an overwrite, an allocating write, a zero and a discard.
      const buf = new Uint8Array(4096);
      await d.read(span, buf);
      assert.ok(buf.every((x) => x === 2));
      await d.write(span + 512, pattern(5, 1000));
      await d.write(2 * span + 100_000, pattern(6, 5000));
      await d.writeZeroes(3 * span, 8192);
      await d.discard(2 * span, 4096);
      await d.read(2 * span + 100_000, buf);
      assert.ok(Buffer.from(buf).equals(Buffer.from(pattern(6, 5000).subarray(0, 4096))));
      assert.equal(stalledDone, false, 'the request on the stalled table is still waiting');
      assert.ok(stall.hits() >= 1);
      stall.release();
      await stalledRead;
      await stalledWrite;
    } finally {
      await d.close();
    }
    assert.equal(qemuCheck(file).corruptions, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an injected EIO fails the write; ENOSPC on metadata fails cleanly; the image stays consistent', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'e.qcow2');
    await createQcow2(file, { size: 8 * 1024 * 1024, options: {} });
    const { d, f } = await openWithFaults(file);
    try {
      await d.write(0, pattern(1, 65536));
      await d.flush();
      // The next data cluster (after L2 at 0x40000, data at 0x50000) is 0x60000.
      f.inject({ ops: ['write'], code: 'EIO', offset: 0x60000, length: 0x10000, times: 1 });
      await assert.rejects(d.write(65536, pattern(2, 4096)), (e: unknown) => (e as { code?: string }).code === 'EIO');
      f.inject({ ops: ['write'], code: 'ENOSPC', times: 1 });
      await assert.rejects(d.write(3 * 65536, pattern(3, 65536)), (e: unknown) => (e as { code?: string }).code === 'ENOSPC');
      f.clearFaults();
      await d.write(5 * 65536, pattern(4, 4096));
      const back = new Uint8Array(4096);
      await d.read(0, back);
      assert.ok(Buffer.from(back).equals(Buffer.from(pattern(1, 65536).subarray(0, 4096))));
    } finally {
      await d.close().catch(() => undefined);
    }
    const c = qemuCheck(file);
    assert.equal(c.corruptions, 0, JSON.stringify(c));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a corrupt L1 entry met by a read or a write rejects the request (never throws)', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'l1.qcow2');
    const C = 65536;
    // Two L2 tables (one maps 512 MiB).
    const span = 8192 * C;
    await createQcow2(file, { size: 2 * span, options: {} });
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 1 0 ${C}`, '-c', `write -P 1 ${span} ${C}`, file]);
    // A reserved bit (1) in L1 entry 0.
    const buf = fs.readFileSync(file);
    const l1Offset = Number(buf.readBigUInt64BE(40));
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([(buf[l1Offset + 7] ?? 0) | 0x02]), 0, 1, l1Offset + 7);
    fs.closeSync(fd);
    const d = await Qcow2Driver.open(file, { readOnly: false });
    try {
      // A write elsewhere first: the image's first write marks it in use, on a path of its own.
      await d.write(span + 100, pattern(2, 1000));
      let reading: Promise<void> | undefined;
      assert.doesNotThrow(() => {
        reading = d.read(100, new Uint8Array(1000));
      });
      await assert.rejects(reading ?? Promise.resolve(), (e: unknown) => (e as { code?: string }).code === 'ECORRUPT');
      let writing: Promise<void> | undefined;
      assert.doesNotThrow(() => {
        writing = d.write(100, pattern(1, 1000));
      });
      await assert.rejects(writing ?? Promise.resolve(), (e: unknown) => (e as { code?: string }).code === 'ECORRUPT');
    } finally {
      await d.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a corrupt table entry met on the direct paths rejects the request (never throws) and marks the image corrupt', async () => {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'c.qcow2');
    const C = 65536;
    await createQcow2(file, { size: 16 * C, options: {} });
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 1 0 ${2 * C}`, file]);
    // A reserved bit in the L2 entry of cluster 0.
    const [l2] = l2Tables(file);
    assert.ok(l2 !== undefined && l2 > 0);
    const fd = fs.openSync(file, 'r+');
    const entry = Buffer.alloc(8);
    fs.readSync(fd, entry, 0, 8, l2);
    entry[7] = (entry[7] ?? 0) | 0x02;
    fs.writeSync(fd, entry, 0, 8, l2);
    fs.closeSync(fd);
    const d = await Qcow2Driver.open(file, { readOnly: false });
    try {
      // Cluster 1 is fine: its write loads the table, so the next write takes the direct path.
      await d.write(C + 100, pattern(1, 1000));
      let pending: Promise<void> | undefined;
      assert.doesNotThrow(() => {
        pending = d.write(100, pattern(2, 1000));
      });
      await assert.rejects(pending ?? Promise.resolve(), (e: unknown) => (e as { code?: string }).code === 'ECORRUPT');
      await assert.rejects(d.write(C + 200, pattern(3, 10)), (e: unknown) => (e as { code?: string }).code === 'EPERM', 'writes are refused once corrupt');
    } finally {
      await d.close();
    }
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as { 'format-specific': { data: { corrupt?: boolean } } };
    assert.equal(info['format-specific'].data.corrupt, true);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a cluster whose plain writers ended is not busy; a later writer of it is, with a wait of its own, also after idle entries were dropped', async () => {
  const t = new InflightTable();
  const settled = (p: Promise<void>): Promise<boolean> => Promise.race([p.then(() => true), turns(3).then(() => false)]);
  const first = t.enterDirect(5);
  const wait1 = t.busy(5, 5);
  assert.ok(wait1);
  assert.equal(await settled(wait1), false, 'busy while its writer runs');
  first.leave();
  assert.equal(await settled(wait1), true);
  assert.equal(t.busy(5, 5), null, 'an idle cluster is not busy');
  const second = t.enterDirect(5);
  const wait2 = t.busy(5, 5);
  assert.ok(wait2);
  assert.equal(await settled(wait2), false, 'the second writer has a wait of its own, not the first one settled');
  // Thousands of other clusters written one at a time: their idle entries are dropped on the way,
  // never the one still written.
  for (let c = 100; c < 5000; c++) t.enterDirect(c).leave();
  assert.equal(t.busy(100, 5000), null);
  assert.ok(t.busy(0, 99), 'cluster 5 is still written');
  second.leave();
  assert.equal(await settled(wait2), true);
  assert.equal(t.busy(0, 10_000), null);
});
