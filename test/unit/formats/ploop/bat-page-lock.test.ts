/**
 * Locks per BAT page: with the host I/O of one 4 KiB BAT page stalled (a flush
 * is writing it), requests to clusters whose entries live in other pages
 * complete, while an allocation in the stalled page waits. qemu-img is the
 * oracle of the result.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createPloop, PloopDriver } from '../../../../src/formats/ploop/index.js';
import { BAT_PAGE_SIZE } from '../../../../src/formats/ploop/layout.js';
import { FaultHostFile } from '../../../../src/host/fault-file.js';
import type { HostOpenOptions } from '../../../../src/host/host-file.js';
import { NodeHostFile } from '../../../../src/host/node-file.js';

const CS = 4096;
/** Entries per page: page 0 also holds the 64-byte header. */
const PAGE0_ENTRIES = (BAT_PAGE_SIZE - 64) / 4;
const PAGE_ENTRIES = BAT_PAGE_SIZE / 4;
/** First cluster whose entry lives in page 1, and in page 2. */
const P1 = PAGE0_ENTRIES;
const P2 = PAGE0_ENTRIES + PAGE_ENTRIES;

function pattern(seed: number, length: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (seed * 31 + i * 7 + (i >> 9)) & 0xff;
  return b;
}

test('with the host I/O of one BAT page stalled, requests to clusters mapped by other pages complete', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-'));
  try {
    const file = path.join(dir, 's.hds');
    const size = (P2 + 1000) * CS;
    await createPloop(file, { size, options: { cluster_size: String(CS) } });
    execFileSync('qemu-io', ['-f', 'parallels', '-c', `write -P 1 0 8k`, '-c', `write -P 2 ${P1 * CS} 8k`, '-c', `write -P 3 ${P2 * CS} 8k`, file]);
    const expected = new Uint8Array(size);
    expected.fill(1, 0, 8192);
    expected.fill(2, P1 * CS, P1 * CS + 8192);
    expected.fill(3, P2 * CS, P2 * CS + 8192);
    const put = (offset: number, data: Uint8Array): Uint8Array => {
      expected.set(data, offset);
      return data;
    };
    let fault: FaultHostFile | null = null;
    const d = await PloopDriver.open(file, {
      readOnly: false,
      openHost: async (p: string, o: HostOpenOptions) => {
        fault = new FaultHostFile(await NodeHostFile.open(p, o), { record: false });
        return fault;
      },
    });
    try {
      assert.ok(fault);
      const f: FaultHostFile = fault;
      // Dirty page 1, then let a flush stall while writing it (it holds page 1's lock).
      await d.write((P1 + 10) * CS, put((P1 + 10) * CS, pattern(1, CS)));
      const stall = f.stall({ offset: BAT_PAGE_SIZE, length: BAT_PAGE_SIZE }, ['read', 'write']);
      let flushDone = false;
      const stalledFlush = d.flush().then(() => (flushDone = true));
      // Wait until the flush is held on the page (bounded: it gets there after one fsync).
      for (let i = 0; i < 500 && stall.hits() === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(stall.hits() >= 1, 'the flush reached the stalled page');
      let allocDone = false;
      const stalledAlloc = d.write((P1 + 20) * CS + 512, put((P1 + 20) * CS + 512, pattern(2, 1024))).then(() => (allocDone = true));
      // Pages 0 and 2: reads, an overwrite, allocating writes, zeroes and a discard.
      const buf = new Uint8Array(CS);
      await d.read(P2 * CS, buf);
      assert.ok(buf.every((x) => x === 3));
      await d.read(0, buf);
      assert.ok(buf.every((x) => x === 1));
      await d.write(512, put(512, pattern(3, 1000)));
      await d.write((P2 + 50) * CS + 100, put((P2 + 50) * CS + 100, pattern(4, 5000)));
      await d.write(30 * CS, put(30 * CS, pattern(5, 3 * CS)));
      await d.writeZeroes(P2 * CS, CS, { mayUnmap: true });
      expected.fill(0, P2 * CS, (P2 + 1) * CS);
      await d.discard(31 * CS, CS);
      expected.fill(0, 31 * CS, 32 * CS);
      await d.read((P2 + 50) * CS + 100, buf);
      assert.ok(Buffer.from(buf).equals(Buffer.from(pattern(4, 5000).subarray(0, CS))));
      // A read of page 1's clusters needs no BAT I/O either.
      await d.read((P1 + 10) * CS, buf);
      assert.ok(Buffer.from(buf).equals(Buffer.from(pattern(1, CS))));
      assert.equal(allocDone, false, 'the allocation mapped by the stalled page is still waiting');
      assert.equal(flushDone, false, 'the flush writing the stalled page is still waiting');
      stall.release();
      await stalledFlush;
      await stalledAlloc;
    } finally {
      await d.close();
    }
    const check = spawnSync('qemu-img', ['check', '-f', 'parallels', file], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
    const raw = path.join(dir, 's.raw');
    execFileSync('qemu-img', ['convert', '-f', 'parallels', '-O', 'raw', file, raw]);
    assert.ok(fs.readFileSync(raw).equals(Buffer.from(expected)), 'qemu-img reads what was written');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
