/** Partly written file-system blocks held in memory: the books (PartialBlocks) and the O_DIRECT file that uses them. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PartialBlocks, type PartialBlock } from '../../../src/host/partial-blocks.js';
import { DirectHostFile } from '../../../src/host/direct-file.js';
import { withDir } from '../../support/temp-dir.js';

function block(p: PartialBlocks, start: number, fill: number): PartialBlock {
  return { start, born: p.stamp(), data: new Uint8Array(4096).fill(fill), mask: 0 };
}

test('held sectors are laid over reads, retired blocks under open ones, and a later disk write supersedes them', () => {
  const p = new PartialBlocks(4096, 512);
  const a = block(p, 8192, 0xaa);
  p.add(a);
  p.hold(a, 8192 + 512, 8192 + 1536); // sectors 1 and 2
  assert.equal(a.mask, 0b110);
  assert.equal(p.isFull(a), false);
  const view = new Uint8Array(4096 * 3).fill(0x11);
  p.overlay(view, 4096);
  assert.ok(view.subarray(0, 4096 + 512).every((b) => b === 0x11));
  assert.ok(view.subarray(4096 + 512, 4096 + 1536).every((b) => b === 0xaa));
  assert.ok(view.subarray(4096 + 1536).every((b) => b === 0x11));
  // A newer block for the same start, opened after the first was retired, wins where both hold.
  p.retire(a);
  const between = p.stamp();
  const b = block(p, 8192, 0xbb);
  p.add(b);
  p.hold(b, 8192 + 1024, 8192 + 2048); // sectors 2 and 3
  const v2 = new Uint8Array(4096).fill(0);
  p.overlay(v2, 8192);
  assert.deepEqual([v2[600], v2[1100], v2[1600], v2[2100]], [0xaa, 0xbb, 0xbb, 0]);
  // A disk write issued before `b` opened completes: it is newer than `a` only.
  assert.deepEqual(p.written(8192, 8192 + 1536, between), []);
  assert.equal(a.mask, 0);
  assert.equal(b.mask, 0b1100, 'a block opened after the write was issued keeps its sectors');
  // One issued after both: what it covered no longer comes from memory.
  assert.deepEqual(p.written(8192, 8192 + 1536, p.stamp()), []);
  assert.equal(b.mask, 0b1000);
  assert.deepEqual(p.written(8192 + 1536, 8192 + 2048, p.stamp()), [b], 'an open block left empty is handed back');
  assert.equal(p.openCount, 0);
  // Landed, and no read in flight began before: gone from reads.
  p.landed(a, p.stamp());
  assert.deepEqual(p.purge(null), [a]);
  const v3 = new Uint8Array(4096).fill(7);
  p.overlay(v3, 8192);
  assert.ok(v3.every((x) => x === 7));
  // A block whose every sector is held is full.
  const c = block(p, 0, 1);
  p.add(c);
  p.hold(c, 0, 4096);
  assert.ok(p.isFull(c));
  assert.equal(p.oldest(), c);
});

test('a landed block stays laid over reads that began before it landed, and goes once they end', () => {
  const p = new PartialBlocks(4096, 512);
  const a = block(p, 0, 0x42);
  p.add(a);
  p.hold(a, 0, 512);
  p.retire(a);
  const readBegan = p.stamp();
  p.landed(a, p.stamp());
  assert.deepEqual(p.purge(readBegan), [], 'the read may have fetched the disk before the block landed');
  const v = new Uint8Array(512);
  p.overlay(v, 0);
  assert.ok(v.every((x) => x === 0x42));
  assert.deepEqual(p.purge(null), [a]);
  const w = new Uint8Array(512);
  p.overlay(w, 0);
  assert.ok(w.every((x) => x === 0));
});

test('block geometries the 32-bit mask cannot describe are refused', () => {
  assert.throws(() => new PartialBlocks(65536, 512), RangeError);
  assert.throws(() => new PartialBlocks(512, 512), RangeError);
  assert.doesNotThrow(() => new PartialBlocks(16384, 512));
});

function rand(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a * 1664525 + 1013904223) >>> 0;
    return a / 4294967296;
  };
}

async function openHolding(file: string, dsync = false): Promise<DirectHostFile | null> {
  const h = await DirectHostFile.openDirect(file, { direct: true, dsync });
  if (h instanceof DirectHostFile && h.partialBlockSize !== null) return h;
  await h.close();
  return null;
}

const probeDir = fs.mkdtempSync(path.join(fs.realpathSync(process.env['TMPDIR'] ?? '/tmp'), 'vdisk-probe-'));
const probeFile = path.join(probeDir, 'p');
fs.writeFileSync(probeFile, Buffer.alloc(4096));
const probe = await openHolding(probeFile);
await probe?.close();
fs.rmSync(probeDir, { recursive: true, force: true });
const noHolding = probe === null ? 'this file system takes O_DIRECT in units of its block size: nothing is held' : false;

test('sector-aligned writes that split blocks read back at once, reach the file by sync, and the file matches a model', { skip: noHolding }, withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  const initial = 256 * 1024;
  fs.writeFileSync(file, Buffer.alloc(initial, 0x33));
  const model = new Uint8Array(1024 * 1024);
  model.fill(0x33, 0, initial);
  let size = initial;
  const h = await openHolding(file);
  assert.ok(h);
  const r = rand(11);
  try {
    let seq = 512;
    for (let round = 0; round < 30; round++) {
      const jobs: Promise<void>[] = [];
      const taken: Array<[number, number]> = [];
      for (let k = 0; k < 12; k++) {
        // Half a sequential stream 512 bytes off the blocks (the seed's case), half scattered sectors.
        const sequential = k % 2 === 0;
        const off = sequential ? seq : 512 * Math.floor(r() * 1800);
        const len = sequential ? 4096 : 512 * (1 + Math.floor(r() * 20));
        if (sequential) seq += len;
        if (taken.some(([a, b]) => off < b && off + len > a)) continue;
        taken.push([off, off + len]);
        const data = new Uint8Array(len).map((_, i) => (round * 13 + k * 5 + (i >> 3)) & 0xff);
        model.set(data, off);
        size = Math.max(size, off + len);
        jobs.push(k % 3 === 0 ? h.writev([data.subarray(0, 512), data.subarray(512)], off) : h.write(data, off));
      }
      // Reads race the writes; only ranges no write of this round touches are checked now.
      const quiet = 512 * Math.floor(r() * 1900);
      if (!taken.some(([a, b]) => quiet < b && quiet + 2048 > a)) {
        const before = model.slice(quiet, quiet + 2048);
        jobs.push(
          (async () => {
            const got = new Uint8Array(2048);
            await h.read(got, quiet);
            assert.ok(Buffer.from(got).equals(Buffer.from(before)), `read at ${quiet} in round ${round}`);
          })(),
        );
      }
      await Promise.all(jobs);
      assert.equal(await h.size(), size);
      const back = new Uint8Array(size);
      await h.read(back, 0);
      const bad = back.findIndex((b, i) => b !== model[i]);
      assert.equal(bad, -1, `round ${round}: first difference at ${bad} (read ${back[bad]}, wrote ${model[bad]}); writes ${JSON.stringify(taken)}`);
      if (round % 10 === 9) {
        await h.sync();
        assert.ok(fs.readFileSync(file).equals(Buffer.from(model.subarray(0, size))), `on disk after sync, round ${round}`);
      }
    }
  } finally {
    await h.close();
  }
  assert.ok(fs.readFileSync(file).equals(Buffer.from(model.subarray(0, size))), 'on disk after close');
}));

test('more partial blocks than are held go to the file oldest first; directsync holds none', { skip: noHolding }, withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  fs.writeFileSync(file, Buffer.alloc(1024 * 1024));
  const h = await openHolding(file);
  assert.ok(h);
  const blocks = 100;
  try {
    const sector = new Uint8Array(512).fill(0x5c);
    // One after the other, so the order blocks are opened in is known.
    for (let k = 0; k < blocks; k++) await h.write(sector, k * 8192 + 512);
    assert.equal(h.heldBlocks, 64);
    const onDisk = (): boolean[] => {
      const disk = fs.readFileSync(file);
      return Array.from({ length: blocks }, (_, k) => disk[k * 8192 + 512] === 0x5c);
    };
    // The evicted blocks' write-outs run in the background: wait for them to land.
    for (let tries = 0; tries < 200 && !onDisk().slice(0, blocks - 64).every(Boolean); tries++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(onDisk().slice(0, blocks - 64).every(Boolean), 'the oldest blocks were written out');
    assert.ok(onDisk().slice(blocks - 64).every((x) => !x), 'the newest 64 are held');
    const back = new Uint8Array(512);
    await h.read(back, (blocks - 1) * 8192 + 512);
    assert.ok(back.every((x) => x === 0x5c), 'a held block reads back');
    await h.sync();
    assert.equal(h.heldBlocks, 0);
    assert.ok(onDisk().every(Boolean), 'sync wrote every held block');
  } finally {
    await h.close();
  }
  const dsync = await DirectHostFile.openDirect(file, { direct: true, dsync: true });
  try {
    assert.equal(dsync instanceof DirectHostFile ? dsync.partialBlockSize : null, null);
    await dsync.write(new Uint8Array(512).fill(0x77), 4096 * 200 + 512);
    assert.equal(fs.readFileSync(file)[4096 * 200 + 512], 0x77, 'a directsync write is on the file when it completes');
  } finally {
    await dsync.close();
  }
}));

test('a write that fills a held block has put it on the file when it completes, and a write over it issued meanwhile lands after it', { skip: noHolding, timeout: 30_000 }, withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  fs.writeFileSync(file, Buffer.alloc(64 * 1024));
  const h = await openHolding(file);
  assert.ok(h);
  // What the file holds now, read past the O_DIRECT handle (no sync in between).
  const onFile = (from: number, to: number): number[] => [...new Set(fs.readFileSync(file).subarray(from, to))];
  try {
    // The seed's case: 4 KiB 512 bytes off the blocks leaves the ends of two blocks held.
    await h.write(new Uint8Array(4096).fill(0x11), 512);
    assert.deepEqual(onFile(0, 8192), [0], 'both partial blocks are held');
    assert.equal(h.heldBlocks, 2);
    // The missing sector of block 0 fills it: on the file when the write completes.
    await h.write(new Uint8Array(512).fill(0x22), 0);
    assert.deepEqual(onFile(0, 512), [0x22]);
    assert.deepEqual(onFile(512, 4096), [0x11]);
    // The next request of the stream fills block 1 and opens block 2.
    await h.write(new Uint8Array(4096).fill(0x33), 4608);
    assert.deepEqual(onFile(4096, 4608), [0x11]);
    assert.deepEqual(onFile(4608, 8192), [0x33]);
    assert.deepEqual(onFile(8192, 12288), [0], 'the head of block 2 is held');
    assert.equal(h.heldBlocks, 1);
    // A write that fills block 2, and a whole-block write over it issued before the first completes.
    const fill = h.write(new Uint8Array(3584).fill(0x44), 8704);
    const over = h.write(new Uint8Array(4096).fill(0x55), 8192);
    await Promise.all([fill, over]);
    assert.deepEqual(onFile(8192, 12288), [0x55], 'the later write lands last');
    await h.sync();
    assert.equal(h.heldBlocks, 0);
    assert.deepEqual(onFile(8192, 12288), [0x55]);
    const back = new Uint8Array(12288);
    await h.read(back, 0);
    assert.ok(Buffer.from(back).equals(fs.readFileSync(file).subarray(0, 12288)));
  } finally {
    await h.close();
  }
}));
