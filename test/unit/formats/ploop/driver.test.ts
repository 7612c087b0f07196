import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { isVdiskError } from '../../../../src/errors.js';
import type { BackingSource } from '../../../../src/formats/driver.js';
import { createPloop, PloopDriver, ploopFormat } from '../../../../src/formats/ploop/index.js';
import { DIRTY_BITMAP_MAGIC, encodeExtension, FEATURE_NECESSARY, FEATURE_TRANSIT } from '../../../../src/formats/ploop/extension.js';

const KB = 1024;
const MB = 1024 * 1024;

function withImage(size: number, clusterSize: string, fn: (path: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
    try {
      const path = join(dir, 'a.hds');
      await createPloop(path, { size, options: { cluster_size: clusterSize } });
      await fn(path);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}

function backingOf(bytes: Uint8Array): BackingSource & { reads: number } {
  const src = {
    length: bytes.length,
    reads: 0,
    async read(offset: number, buf: Uint8Array): Promise<void> {
      src.reads++;
      buf.set(bytes.subarray(offset, offset + buf.length));
    },
  };
  return src;
}

function filled(len: number, v: number): Uint8Array {
  return new Uint8Array(len).fill(v);
}

async function readBack(d: PloopDriver, off: number, len: number): Promise<Uint8Array> {
  const b = new Uint8Array(len);
  await d.read(off, b);
  return b;
}

test('ploopFormat probes both signatures and nothing else', () => {
  const h = new Uint8Array(512);
  h.set(Buffer.from('WithouFreSpacExt'), 0);
  h[16] = 2;
  assert.equal(ploopFormat.probe(h), true);
  h.set(Buffer.from('WithoutFreeSpace'), 0);
  assert.equal(ploopFormat.probe(h), true);
  h[16] = 1;
  assert.equal(ploopFormat.probe(h), false);
  assert.equal(ploopFormat.probe(new Uint8Array(512)), false);
});

test('unallocated clusters read from the backing; a partial write copies the rest of the cluster from it', withImage(4 * MB, '64k', async (path) => {
  const below = new Uint8Array(3 * MB).map((_, i) => (i * 13) & 0xff);
  const d = await PloopDriver.open(path, { readOnly: false });
  d.setBacking(backingOf(below));
  assert.deepEqual(await readBack(d, 1000, 5000), below.subarray(1000, 6000));
  // Past the backing's end: zeros.
  assert.deepEqual(await readBack(d, 3 * MB - 10, 20), new Uint8Array(20).map((_, i) => (i < 10 ? below[3 * MB - 10 + i] ?? 0 : 0)));
  await d.write(70 * KB, filled(100, 0xee));
  d.setBacking(null);
  // Without the backing, the whole cluster still holds the copied data around the write.
  const cluster = await readBack(d, 64 * KB, 64 * KB);
  const expect = below.slice(64 * KB, 128 * KB);
  expect.fill(0xee, 6 * KB, 6 * KB + 100);
  assert.deepEqual(cluster, expect);
  const ext = await d.blockStatus(0, 4 * MB);
  assert.deepEqual(ext.map((e) => [e.length, e.allocated]), [[64 * KB, false], [64 * KB, true], [4 * MB - 128 * KB, false]]);
  await d.close();
}));

test('writeZeroes over a backing allocates zeros; without one, unallocated space stays unallocated', withImage(2 * MB, '64k', async (path) => {
  const d = await PloopDriver.open(path, { readOnly: false });
  await d.writeZeroes(0, 128 * KB);
  assert.equal((await d.blockStatus(0, 128 * KB))[0]?.allocated, false);
  d.setBacking(backingOf(filled(2 * MB, 0x42)));
  await assert.rejects(d.writeZeroes(0, 64 * KB, { fastZero: true }), (e: unknown) => isVdiskError(e, 'ENOTSUP'));
  await d.writeZeroes(10 * KB, 64 * KB);
  const got = await readBack(d, 0, 128 * KB);
  const expect = filled(128 * KB, 0x42);
  expect.fill(0, 10 * KB, 74 * KB);
  assert.deepEqual(got, expect);
  await d.close();
}));

test('discard of whole clusters unmaps them (no backing); partial discard keeps data', withImage(2 * MB, '64k', async (path) => {
  const d = await PloopDriver.open(path, { readOnly: false });
  await d.write(0, filled(256 * KB, 7));
  await d.discard(32 * KB, 128 * KB);
  const ext = await d.blockStatus(0, 256 * KB);
  assert.deepEqual(ext.map((e) => [e.length, e.allocated]), [[64 * KB, true], [64 * KB, false], [128 * KB, true]]);
  const back = await readBack(d, 0, 256 * KB);
  const expect = filled(256 * KB, 7);
  expect.fill(0, 64 * KB, 128 * KB);
  assert.deepEqual(back, expect);
  await d.close();
}));

test('concurrent writes into one unallocated cluster allocate it once and keep both writes', withImage(1 * MB, '64k', async (path) => {
  const d = await PloopDriver.open(path, { readOnly: false });
  await Promise.all([d.write(0, filled(100, 1)), d.write(1000, filled(100, 2)), d.write(60 * KB, filled(4 * KB, 3))]);
  await d.close();
  const size = fs.statSync(path).size;
  const r = await PloopDriver.open(path, { readOnly: true });
  assert.equal(size, 64 * KB * 2, 'one header cluster + one data cluster');
  const b = await readBack(r, 0, 64 * KB);
  assert.equal(b[50], 1);
  assert.equal(b[1050], 2);
  assert.equal(b[60 * KB + 5], 3);
  assert.equal(b[500], 0);
  await r.close();
}));

test('the BAT entry reaches the disk only at flush, after the data (index after data)', withImage(1 * MB, '64k', async (path) => {
  const d = await PloopDriver.open(path, { readOnly: false });
  await d.write(0, filled(512, 9));
  const entryOnDisk = (): number => fs.readFileSync(path).readUInt32LE(64);
  assert.equal(entryOnDisk(), 0);
  const cluster = fs.readFileSync(path).subarray(64 * KB, 64 * KB + 512);
  assert.ok(cluster.equals(Buffer.from(filled(512, 9))), 'data is already written');
  await d.flush();
  assert.equal(entryOnDisk(), 1);
  await d.close();
}));

test('an allocation stuck reading its backing does not hold up writes to other clusters or pages', withImage(64 * MB, '4k', async (path) => {
  const d = await PloopDriver.open(path, { readOnly: false });
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  d.setBacking({
    length: 64 * MB,
    async read(offset: number, buf: Uint8Array): Promise<void> {
      if (offset < 4 * KB) await gate;
      buf.fill(0x33);
    },
  });
  let stuckDone = false;
  const stuck = d.write(100, filled(10, 1)).then(() => (stuckDone = true));
  // Cluster 5000 has its entry in BAT page 4, cluster 1 in page 0 (same page as the stuck one).
  await d.write(5000 * 4 * KB, filled(4 * KB, 5));
  await d.write(4 * KB, filled(4 * KB, 6));
  assert.equal(stuckDone, false);
  release();
  await stuck;
  assert.deepEqual(await readBack(d, 98, 14), new Uint8Array([0x33, 0x33, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0x33, 0x33]));
  assert.equal((await readBack(d, 5000 * 4 * KB, 1))[0], 5);
  await d.close();
}));

test('requests outside the disk, writes to read-only images and shrinking are refused', withImage(1 * MB, '64k', async (path) => {
  const ro = await PloopDriver.open(path, { readOnly: true });
  await assert.rejects(ro.write(0, filled(1, 1)), (e: unknown) => isVdiskError(e, 'EPERM'));
  await assert.rejects(ro.read(MB - 1, new Uint8Array(2)), (e: unknown) => isVdiskError(e, 'ERANGE'));
  await assert.rejects(ro.check('all'), (e: unknown) => isVdiskError(e, 'EPERM'));
  await ro.close();
  const rw = await PloopDriver.open(path, { readOnly: false });
  await assert.rejects(rw.resize(512 * KB), (e: unknown) => isVdiskError(e, 'ENOTSUP'));
  await assert.rejects(rw.resize(MB + 1), (e: unknown) => isVdiskError(e, 'EINVAL'));
  await rw.close();
}));

test('a BAT entry pointing into the header is refused at open with nothing written', withImage(1 * MB, '64k', async (path) => {
  const fd = fs.openSync(path, 'r+');
  fs.writeSync(fd, Buffer.from([0, 0, 0, 0]), 0, 4, 68); // entry 1 = 0 (fine)
  const e = Buffer.alloc(4);
  e.writeUInt32LE(0);
  fs.writeSync(fd, e, 0, 4, 64);
  fs.closeSync(fd);
  // Make the file two clusters long and point entry 0 at cluster 0 (the header).
  fs.truncateSync(path, 128 * KB);
  const bytes = fs.readFileSync(path);
  bytes.writeUInt32LE(0, 64);
  bytes.writeUInt32LE(1, 68);
  // data_off = 2 clusters, so cluster 1 is inside the header area.
  bytes.writeUInt32LE(256, 48);
  fs.writeFileSync(path, bytes);
  const before = fs.readFileSync(path);
  for (const readOnly of [true, false]) {
    await assert.rejects(PloopDriver.open(path, { readOnly }), (err: unknown) => {
      assert.ok(isVdiskError(err, 'ECORRUPT'));
      assert.equal(err.context.field, 'bat[1]');
      assert.match(err.message, /inside the header\/BAT area/);
      return true;
    });
  }
  assert.deepEqual(fs.readFileSync(path), before);
}));

test('resize within the existing BAT only changes the size', withImage(1000 * KB, '64k', async (path) => {
  const d = await PloopDriver.open(path, { readOnly: false });
  await d.write(0, filled(KB, 1));
  await d.resize(1024 * KB);
  assert.equal(d.length, 1024 * KB);
  await d.write(1023 * KB, filled(KB, 2));
  await d.close();
  const r = await PloopDriver.open(path, { readOnly: true });
  assert.equal(r.length, 1024 * KB);
  assert.equal((await readBack(r, 1023 * KB, 1))[0], 2);
  const report = await r.check('none');
  assert.equal(report.corruptions + report.leaks, 0);
  await r.close();
}));

async function addExtension(path: string, features: Parameters<typeof encodeExtension>[0]): Promise<number> {
  const bytes = fs.readFileSync(path);
  const extHost = bytes.length;
  const cluster = encodeExtension(features, 64 * KB) as Uint8Array;
  const out = Buffer.concat([bytes, cluster]);
  out.writeBigUInt64LE(BigInt(extHost / 512), 56);
  out.writeUInt32LE(0x312e3276, 44);
  fs.writeFileSync(path, out);
  return extHost;
}

test('a dirty-bitmap extension is kept by a reader and dropped by a writer', withImage(1 * MB, '64k', async (path) => {
  await addExtension(path, [{ magic: DIRTY_BITMAP_MAGIC, flags: 0n, data: new Uint8Array(32) }]);
  const ro = await PloopDriver.open(path, { readOnly: true });
  const r = await ro.check('none');
  assert.equal(r.leaks, 0, 'the extension cluster is in use, not leaked');
  await ro.close();
  assert.notEqual(fs.readFileSync(path).readBigUInt64LE(56), 0n);
  const rw = await PloopDriver.open(path, { readOnly: false });
  await rw.close();
  const after = fs.readFileSync(path);
  assert.equal(after.readBigUInt64LE(56), 0n);
  assert.equal(after.readUInt32LE(44), 0);
  assert.equal(after.length, 64 * KB, 'the dropped extension cluster is trimmed at close');
}));

test('a TRANSIT extension survives a writer; an unknown NECESSARY one forbids writing', withImage(1 * MB, '64k', async (path) => {
  const extHost = await addExtension(path, [{ magic: 0x77n, flags: FEATURE_TRANSIT, data: new Uint8Array([1]) }]);
  const rw = await PloopDriver.open(path, { readOnly: false });
  await rw.write(0, filled(KB, 1));
  await rw.close();
  const after = fs.readFileSync(path);
  assert.equal(after.readBigUInt64LE(56), BigInt(extHost / 512));
  assert.equal(after.readUInt32LE(44), 0x312e3276);
  assert.equal(after.length, 3 * 64 * KB);
  const nec = fs.readFileSync(path);
  nec.set(encodeExtension([{ magic: 0x78n, flags: FEATURE_NECESSARY, data: new Uint8Array(0) }], 64 * KB) as Uint8Array, extHost);
  fs.writeFileSync(path, nec);
  await assert.rejects(PloopDriver.open(path, { readOnly: false }), (e: unknown) => isVdiskError(e, 'ENOTSUP'));
  assert.deepEqual(fs.readFileSync(path), nec);
  await (await PloopDriver.open(path, { readOnly: true })).close();
}));
