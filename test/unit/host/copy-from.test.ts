/** NodeHostFile.copyFrom: the kernel's copy_file_range between host files, and its fallback through memory. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { FaultHostFile } from '../../../src/host/fault-file.js';
import { nativeHost } from '../../../src/host/native.js';
import { NodeHostFile } from '../../../src/host/node-file.js';
import { writeParts } from '../../../src/host/host-range.js';
import { HostCopyError } from '../../../src/host/host-file.js';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-copy-'));
}

test('copyFrom copies a range between two files in the kernel, and reads zeros past the source end', async () => {
  assert.ok(nativeHost()?.copyRangeAsync, 'the addon is built with copyRangeAsync');
  const dir = tmp();
  try {
    const data = randomBytes(3 * 65536 + 123);
    fs.writeFileSync(path.join(dir, 'src'), data);
    const src = await NodeHostFile.open(path.join(dir, 'src'), { readOnly: true });
    const dst = await NodeHostFile.open(path.join(dir, 'dst'), { create: true });
    assert.equal(dst.canCopyFrom(src), true);
    await dst.copyFrom({ file: src, offset: 4096, length: 65536 }, 1000);
    // Runs 77 bytes past the source's end: those read as zeros.
    await dst.copyFrom({ file: src, offset: data.length - 100, length: 177 }, 70000);
    await src.close();
    await dst.close();
    const out = fs.readFileSync(path.join(dir, 'dst'));
    assert.deepEqual(out.subarray(1000, 1000 + 65536), data.subarray(4096, 4096 + 65536));
    assert.deepEqual(out.subarray(70000, 70100), data.subarray(data.length - 100));
    assert.deepEqual(out.subarray(70100, 70177), Buffer.alloc(77));
    assert.equal(out.length, 70177);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a source that is not a plain host file is copied through memory; O_DSYNC targets refuse the kernel path', async () => {
  const dir = tmp();
  try {
    const data = randomBytes(200000);
    fs.writeFileSync(path.join(dir, 'src'), data);
    const inner = await NodeHostFile.open(path.join(dir, 'src'), { readOnly: true });
    const src = new FaultHostFile(inner);
    const dst = await NodeHostFile.open(path.join(dir, 'dst'), { create: true });
    assert.equal(dst.canCopyFrom(src), false);
    const dsync = await NodeHostFile.open(path.join(dir, 'dsync'), { create: true, dsync: true });
    assert.equal(dsync.canCopyFrom(inner), false);
    await dst.copyFrom({ file: src, offset: 10, length: 150000 }, 0);
    await Promise.all([inner.close(), dst.close(), dsync.close()]);
    assert.deepEqual(fs.readFileSync(path.join(dir, 'dst')), data.subarray(10, 150010));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writeParts writes buffers and host ranges back to back, merging ranges that continue each other', async () => {
  const dir = tmp();
  try {
    const data = randomBytes(65536 * 4);
    fs.writeFileSync(path.join(dir, 'src'), data);
    const src = await NodeHostFile.open(path.join(dir, 'src'), { readOnly: true });
    const dst = await NodeHostFile.open(path.join(dir, 'dst'), { create: true });
    const copies: number[] = [];
    const copyFrom = dst.copyFrom.bind(dst);
    dst.copyFrom = (r, at) => (copies.push(r.length), copyFrom(r, at));
    const head = new Uint8Array(512).fill(7);
    const tail = new Uint8Array(100).fill(9);
    const parts = [head, { file: src, offset: 0, length: 65536 }, { file: src, offset: 65536, length: 65536 }, tail, { file: src, offset: 196608, length: 4096 }];
    await writeParts(dst, parts, 10);
    await src.close();
    await dst.close();
    assert.deepEqual(copies, [131072, 4096]);
    const expected = Buffer.concat([Buffer.alloc(10), head, data.subarray(0, 131072), tail, data.subarray(196608, 200704)]);
    assert.deepEqual(fs.readFileSync(path.join(dir, 'dst')), expected);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('writeParts writes neighbouring views of one buffer as one write, and views that do not continue each other as a vectored one', async () => {
  const dir = tmp();
  try {
    const dst = await NodeHostFile.open(path.join(dir, 'dst'), { create: true });
    const calls: string[] = [];
    const write = dst.write.bind(dst);
    const writev = dst.writev.bind(dst);
    dst.write = (b, at) => (calls.push(`write ${b.length}@${at}`), write(b, at));
    dst.writev = (bs, at) => (calls.push(`writev ${bs.map((b) => b.length).join('+')}@${at}`), writev(bs, at));
    const chunk = randomBytes(4 * 65536);
    // A chunk sliced per cluster, as the qcow2 write path does.
    const slices = [0, 1, 2, 3].map((i) => chunk.subarray(i * 65536, (i + 1) * 65536));
    await writeParts(dst, slices, 0);
    // Views of one buffer that skip a range, then another buffer: three pieces.
    const other = randomBytes(100);
    await writeParts(dst, [chunk.subarray(0, 100), chunk.subarray(200, 300), other], 300000);
    await dst.close();
    assert.deepEqual(calls, ['write 262144@0', 'writev 100+100+100@300000']);
    const out = fs.readFileSync(path.join(dir, 'dst'));
    assert.deepEqual(out.subarray(0, chunk.length), chunk);
    assert.deepEqual(out.subarray(300000), Buffer.concat([chunk.subarray(0, 100), chunk.subarray(200, 300), other]));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('copyRunsFrom copies runs on the addon threads, leaving out aligned blocks of zeros, and reads zeros past a source end', async () => {
  assert.ok(nativeHost()?.copyRuns, 'the addon is built with copyRuns');
  const dir = tmp();
  try {
    const data = randomBytes(3 * 1024 * 1024);
    data.fill(0, 8192, 16384); // two zero blocks inside the data
    fs.writeFileSync(path.join(dir, 'src'), data);
    const src = await NodeHostFile.open(path.join(dir, 'src'), { readOnly: true });
    const dst = await NodeHostFile.open(path.join(dir, 'dst'), { create: true });
    await dst.truncate(8 * 1024 * 1024);
    const runs = [
      { src: { file: src, offset: 0, length: data.length }, at: 0 },
      // 1000 bytes past the source's end: zeros, not written.
      { src: { file: src, offset: data.length - 3096, length: 4096 }, at: 5 * 1024 * 1024 },
    ];
    const written = await dst.copyRunsFrom(runs, 4096);
    assert.equal(written, data.length - 8192 + 4096);
    assert.equal(await dst.seekHole(0), 8192, 'the zero blocks stay a hole');
    assert.equal(await dst.seekData(8192), 16384);
    await Promise.all([src.close(), dst.close()]);
    const out = fs.readFileSync(path.join(dir, 'dst'));
    assert.deepEqual(out.subarray(0, data.length), data);
    assert.deepEqual(out.subarray(5 * 1024 * 1024, 5 * 1024 * 1024 + 3096), data.subarray(data.length - 3096));
    assert.deepEqual(out.subarray(5 * 1024 * 1024 + 3096, 5 * 1024 * 1024 + 4096), Buffer.alloc(1000));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('copyRunsFrom allocates only what it writes: the space it reserves ahead of a large write is that write, past the end too, and blocks of zeros stay unallocated', async () => {
  const dir = tmp();
  const MiB = 1024 * 1024;
  try {
    // 1 MiB of data, 1 MiB of zeros, 1 MiB of data; then 256 KiB whose last 64 KiB are zeros.
    const data = randomBytes(3 * MiB + 256 * 1024);
    data.fill(0, MiB, 2 * MiB);
    data.fill(0, 3 * MiB + 192 * 1024);
    fs.writeFileSync(path.join(dir, 'src'), data);
    const src = await NodeHostFile.open(path.join(dir, 'src'), { readOnly: true });
    const dst = await NodeHostFile.open(path.join(dir, 'dst'), { create: true });
    await dst.truncate(3 * MiB);
    const tailAt = 3 * MiB + MiB / 2; // past the target's end
    const written = await dst.copyRunsFrom(
      [
        { src: { file: src, offset: 0, length: 3 * MiB }, at: 0 },
        { src: { file: src, offset: 3 * MiB, length: 256 * 1024 }, at: tailAt },
      ],
      4096,
    );
    assert.equal(written, 2 * MiB + 192 * 1024);
    await Promise.all([src.close(), dst.close()]);
    const file = path.join(dir, 'dst');
    assert.equal(fs.statSync(file).size, tailAt + 192 * 1024, 'the file ends where the last write does');
    const allocated = fs.statSync(file).blocks * 512;
    assert.ok(allocated >= written && allocated <= written + 64 * 1024, `allocated ${allocated} bytes for ${written} written`);
    assert.equal(await seekDataIn(file, MiB), 2 * MiB, 'the zero MiB is a hole');
    const out = fs.readFileSync(file);
    assert.deepEqual(out.subarray(0, 3 * MiB), data.subarray(0, 3 * MiB));
    assert.deepEqual(out.subarray(tailAt), data.subarray(3 * MiB, 3 * MiB + 192 * 1024));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

async function seekDataIn(file: string, offset: number): Promise<number | null> {
  const f = await NodeHostFile.open(file, { readOnly: true });
  try {
    return await f.seekData(offset);
  } finally {
    await f.close();
  }
}

/** A source whose reads fail on the addon's threads, a plain source, and an empty target. */
async function failureFixture(dir: string): Promise<{ bad: NodeHostFile; inner: NodeHostFile; dst: NodeHostFile }> {
  fs.mkdirSync(path.join(dir, 'sub'));
  fs.writeFileSync(path.join(dir, 'plain'), randomBytes(4096));
  // A directory opens, but reading it fails (EISDIR) on the reader thread.
  const bad = await NodeHostFile.open(path.join(dir, 'sub'), { readOnly: true });
  const inner = await NodeHostFile.open(path.join(dir, 'plain'), { readOnly: true });
  const dst = await NodeHostFile.open(path.join(dir, 'dst'), { create: true });
  return { bad, inner, dst };
}

test('copyRunsFrom names the side and the target offset of a failure, and declines sources it cannot read itself', async () => {
  const dir = tmp();
  try {
    const { bad, inner, dst } = await failureFixture(dir);
    await assert.rejects(dst.copyRunsFrom([{ src: { file: bad, offset: 0, length: 4096 }, at: 65536 }], 4096), (e: unknown) => {
      assert.ok(e instanceof HostCopyError);
      assert.equal(e.side, 'read');
      assert.equal(e.at, 65536);
      assert.match(e.message, /sub/);
      return true;
    });
    assert.equal(await dst.copyRunsFrom([{ src: { file: new FaultHostFile(inner), offset: 0, length: 4096 }, at: 0 }], 4096), null);
    await Promise.all([bad.close(), inner.close(), dst.close()]);
    assert.equal(fs.statSync(path.join(dir, 'dst')).size, 0, 'nothing written');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('copyRunsPackedFrom gathers the clusters the runs touch, whole, and writes those with data one after another from the placed offset, in guest order', async () => {
  assert.ok(nativeHost()?.copyRunsPacked, 'the addon is built with copyRunsPacked');
  const dir = tmp();
  try {
    const cs = 4096;
    const data = randomBytes(64 * 1024);
    data.fill(0, 8192, 12288); // a whole cluster of zeros inside a run: left out
    data.fill(0, 20000, 24576); // a cluster whose data ends before it does: written, zeros after
    fs.writeFileSync(path.join(dir, 'src'), data);
    const src = await NodeHostFile.open(path.join(dir, 'src'), { readOnly: true });
    const dst = await NodeHostFile.open(path.join(dir, 'dst'), { create: true });
    fs.writeFileSync(path.join(dir, 'dst'), Buffer.alloc(cs, 0xee)); // the cluster before the placed offset stays as it is
    // Five clusters in: the engine counts the clusters it reports from the first run's.
    const base = 5 * cs;
    const runs = [
      // Starts and ends inside clusters: the bytes around them read as zeros.
      { src: { file: src, offset: 100, length: 24476 }, at: base + 100 },
      // Starts in the cluster where the run before ends, at a gap.
      { src: { file: src, offset: 30000, length: 2000 }, at: base + 24676 },
      // Past a hole in the guest; 1000 bytes past the source's end read as zeros.
      { src: { file: src, offset: data.length - 3096, length: 4096 }, at: base + 10 * cs },
      // In the middle of many clusters (more than one buffer of the engine), after a gap.
      { src: { file: src, offset: 0, length: 64 * 1024 }, at: base + 1024 * 1024 - 512 },
    ];
    const clusters = new Int32Array(40).fill(-1);
    let placed = 0;
    const count = await dst.copyRunsPackedFrom(runs, cs, clusters, () => {
      placed++;
      return Promise.resolve(cs);
    });
    assert.equal(placed, 1);
    // The guest, as the runs make it.
    const guest = Buffer.alloc(base + 1024 * 1024 + 128 * 1024);
    for (const r of runs) {
      const bytes = Buffer.alloc(r.src.length);
      data.copy(bytes, 0, r.src.offset, Math.min(data.length, r.src.offset + r.src.length));
      bytes.copy(guest, r.at);
    }
    const touched: number[] = [];
    for (const r of runs) for (let c = Math.floor(r.at / cs); c <= Math.floor((r.at + r.src.length - 1) / cs); c++) if (touched[touched.length - 1] !== c) touched.push(c);
    const withData = touched.filter((c) => guest.subarray(c * cs, (c + 1) * cs).some((b) => b !== 0));
    assert.ok(withData.length < touched.length, 'a touched cluster of zeros is left out');
    assert.equal(count, withData.length);
    assert.deepEqual([...clusters.subarray(0, withData.length)], withData.map((c) => c - 5));
    assert.ok(clusters.subarray(withData.length).every((c) => c === -1), 'nothing past the count');
    await Promise.all([src.close(), dst.close()]);
    const out = fs.readFileSync(path.join(dir, 'dst'));
    assert.equal(out.length, cs * (1 + withData.length));
    assert.ok(out.subarray(0, cs).every((b) => b === 0xee));
    withData.forEach((c, i) => assert.deepEqual(out.subarray(cs * (1 + i), cs * (2 + i)), guest.subarray(c * cs, (c + 1) * cs), `cluster ${c}`));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('copyRunsPackedFrom names the side and offset of a failure (guest for a read), declines sources it cannot read itself before placing, and refuses bad arguments', async () => {
  const dir = tmp();
  try {
    const { bad, inner, dst } = await failureFixture(dir);
    const place = (): Promise<number> => Promise.resolve(0);
    await assert.rejects(dst.copyRunsPackedFrom([{ src: { file: bad, offset: 0, length: 4096 }, at: 8192 }], 4096, new Int32Array(1), place), (e: unknown) => {
      assert.ok(e instanceof HostCopyError);
      assert.equal(e.side, 'read');
      assert.equal(e.at, 8192);
      assert.match(e.message, /sub/);
      return true;
    });
    let placed = false;
    const declined = await dst.copyRunsPackedFrom([{ src: { file: new FaultHostFile(inner), offset: 0, length: 4096 }, at: 0 }], 4096, new Int32Array(1), () => {
      placed = true;
      return Promise.resolve(0);
    });
    assert.equal(declined, null);
    assert.equal(placed, false, 'declined before placing');
    // More clusters with data than places for them: a write failure, not a write past the reservation.
    await assert.rejects(dst.copyRunsPackedFrom([{ src: { file: inner, offset: 0, length: 4096 }, at: 0 }], 2048, new Int32Array(1), place), (e: unknown) => {
      assert.ok(e instanceof HostCopyError);
      assert.equal(e.side, 'write');
      assert.equal(e.at, 2048);
      return true;
    });
    const call = nativeHost()?.copyRunsPacked;
    // Runs out of order, a cluster size that is no power of two, a start between clusters.
    assert.throws(() => call?.(0, new Float64Array([0, 0, 10, 4096, 0, 0, 10, 0]), 4096, 0, new Int32Array(2), () => undefined), /EINVAL|copyRunsPacked/);
    assert.throws(() => call?.(0, new Float64Array([0, 0, 10, 0]), 3000, 0, new Int32Array(2), () => undefined), /EINVAL|copyRunsPacked/);
    assert.throws(() => call?.(0, new Float64Array([0, 0, 10, 0]), 4096, 100, new Int32Array(2), () => undefined), /EINVAL|copyRunsPacked/);
    // Clusters in any other array, or runs whose clusters do not all count from the first within an int32.
    assert.throws(() => call?.(0, new Float64Array([0, 0, 10, 0]), 4096, 0, new Float64Array(2) as unknown as Int32Array, () => undefined), /EINVAL|copyRunsPacked/);
    assert.throws(() => call?.(0, new Float64Array([0, 0, 10, 0, 0, 0, 10, 512 * 2 ** 31]), 512, 0, new Int32Array(2), () => undefined), /EINVAL|copyRunsPacked/);
    // A read-only file refuses before the addon sees it.
    await assert.rejects(inner.copyRunsPackedFrom([{ src: { file: inner, offset: 0, length: 4096 }, at: 0 }], 4096, new Int32Array(1), place));
    await Promise.all([bad.close(), inner.close(), dst.close()]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
