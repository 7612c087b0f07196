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
async function openWithFaults(file: string): Promise<{ d: Qcow2Driver; f: FaultHostFile }> {
  let fault: FaultHostFile | null = null;
  const d = await Qcow2Driver.open(file, {
    readOnly: false,
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
  test(`sequential unaligned allocating writes at depth 16 never wait on a COW they overwrite${ext ? ' (extended L2)' : ''}`, async () => {
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
        await sequentialWrites(d, { start: 512, size: 4096, count: 600, depth: 16 }, expected);
        const s = d.stats();
        assert.equal(s.cowWaits, 0, `COW waits: ${JSON.stringify(s)}`);
        assert.equal(s.allocationWaits, 0, `allocation waits: ${JSON.stringify(s)}`);
        assert.ok(s.cowCancellations > 500, `cancellations: ${JSON.stringify(s)}`);
        // Read back through the engine before the flush (some clusters may not be linked yet).
        assert.ok(await readsBack(d, expected), 'engine reads back what was written');
      } finally {
        await d.close();
      }
      assertCleanWith(file, expected);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
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
