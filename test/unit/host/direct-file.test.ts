/** The O_DIRECT host file: unaligned and concurrent I/O through aligned bounce buffers. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DirectHostFile } from '../../../src/host/direct-file.js';
import { createQcow2 } from '../../../src/formats/qcow2/create.js';
import { Qcow2Driver } from '../../../src/formats/qcow2/qcow2-driver.js';
import { execFileSync, spawnSync } from 'node:child_process';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-'));
}

function rand(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a * 1664525 + 1013904223) >>> 0;
    return a / 4294967296;
  };
}

for (const transport of ['io_uring', 'thread pool'] as const) {
  test(`unaligned concurrent writes and reads through O_DIRECT match a model, and the file size is exact (${transport})`, () =>
    modelRun(transport === 'thread pool'));
}

async function modelRun(withoutRing: boolean): Promise<void> {
  const dir = tmp();
  try {
    const file = path.join(dir, 'f.bin');
    fs.writeFileSync(file, Buffer.alloc(100_000, 7));
    const model = new Uint8Array(300_000);
    model.fill(7, 0, 100_000);
    let size = 100_000;
    // The ring is chosen at open; VDISK_NO_RING=1 makes this file use the thread pool.
    if (withoutRing) process.env['VDISK_NO_RING'] = '1';
    const h = await DirectHostFile.openDirect(file, { direct: true }).finally(() => delete process.env['VDISK_NO_RING']);
    const r = rand(5);
    try {
      for (let round = 0; round < 20; round++) {
        const jobs: Promise<void>[] = [];
        const taken: Array<[number, number]> = [];
        for (let k = 0; k < 8; k++) {
          // Every fourth write is block-aligned (the path that goes to the kernel with no wait).
          const aligned = k % 4 === 3;
          const off = aligned ? Math.floor(r() * 60) * 4096 : Math.floor(r() * 250_000);
          const len = aligned ? 4096 * (1 + Math.floor(r() * 3)) : 1 + Math.floor(r() * 9000);
          // Disjoint byte ranges that may share 512-byte blocks.
          if (taken.some(([a, b]) => off < b && off + len > a)) continue;
          taken.push([off, off + len]);
          const data = new Uint8Array(len).map((_, i) => (round * 31 + k * 7 + i) & 0xff);
          model.set(data, off);
          size = Math.max(size, off + len);
          jobs.push(k % 2 === 0 ? h.write(data, off) : h.writev([data.subarray(0, len >> 1), data.subarray(len >> 1)], off));
        }
        await Promise.all(jobs);
        assert.equal(await h.size(), size);
        const back = new Uint8Array(size + 777);
        await h.read(back, 0);
        assert.ok(Buffer.from(back.subarray(0, size)).equals(Buffer.from(model.subarray(0, size))), `round ${round}`);
        assert.ok(back.subarray(size).every((x) => x === 0));
      }
    } finally {
      await h.close();
    }
    assert.ok(fs.readFileSync(file).equals(Buffer.from(model.subarray(0, size))));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('a qcow2 image written with cache=none checks clean and reads back in qemu-img', async () => {
  const dir = tmp();
  try {
    const file = path.join(dir, 'n.qcow2');
    await createQcow2(file, { size: 8 * 1024 * 1024, options: {} });
    const expected = new Uint8Array(8 * 1024 * 1024);
    const d = await Qcow2Driver.open(file, { readOnly: false, cache: 'none' });
    try {
      const jobs: Promise<void>[] = [];
      for (let i = 0; i < 64; i++) {
        const data = new Uint8Array(3000).fill(i + 1);
        expected.set(data, 512 + i * 3000);
        jobs.push(d.write(512 + i * 3000, data));
      }
      await Promise.all(jobs);
      await d.writeZeroes(65536 * 2, 65536);
      expected.fill(0, 65536 * 2, 65536 * 3);
    } finally {
      await d.close();
    }
    const r = spawnSync('qemu-img', ['check', file]);
    assert.equal(r.status, 0, String(r.stdout));
    const raw = path.join(dir, 'n.raw');
    execFileSync('qemu-img', ['convert', '-O', 'raw', file, raw]);
    assert.ok(fs.readFileSync(raw).equals(Buffer.from(expected)));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('scattered and sequential writes with cache=none leave the same file qemu-io does: same size, same data, clean check', async () => {
  const dir = tmp();
  try {
    const size = 64 * 1024 * 1024;
    const ours = path.join(dir, 'ours.qcow2');
    const theirs = path.join(dir, 'theirs.qcow2');
    await createQcow2(ours, { size, options: {} });
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', theirs, String(size)]);
    // Fresh clusters (COW of zeros skipped), a cluster written twice, sector-aligned
    // pieces that split 4 KiB blocks (held until their neighbours come), one unaligned.
    const r = rand(21);
    const writes: Array<{ offset: number; length: number; fill: number }> = [];
    for (let i = 0; i < 40; i++) writes.push({ offset: 65536 * Math.floor(r() * 1000) + 512 * Math.floor(r() * 100), length: 512 * (1 + Math.floor(r() * 16)), fill: i + 1 });
    for (let i = 0; i < 24; i++) writes.push({ offset: 40 * 1024 * 1024 + 512 + 4096 * i, length: 4096, fill: 100 + i });
    writes.push({ offset: 123_457, length: 10_000, fill: 200 });
    const d = await Qcow2Driver.open(ours, { readOnly: false, cache: 'none' });
    try {
      for (const w of writes) await d.write(w.offset, new Uint8Array(w.length).fill(w.fill));
    } finally {
      await d.close();
    }
    execFileSync('qemu-io', ['-t', 'none', '-f', 'qcow2', ...writes.flatMap((w) => ['-c', `write -q -P ${w.fill} ${w.offset} ${w.length}`]), theirs]);
    const check = spawnSync('qemu-img', ['check', ours], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout);
    assert.equal(spawnSync('qemu-img', ['compare', '-q', ours, theirs]).status, 0, 'same guest content');
    assert.equal(fs.statSync(ours).size, fs.statSync(theirs).size, 'same file size (the space reserved ahead was trimmed)');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a write cut short by the file size limit fails naming the request, and frees its extent for the next write', () => {
  const dir = tmp();
  try {
    const file = path.join(dir, 'limit.bin');
    fs.writeFileSync(file, '');
    const moduleUrl = new URL('../../../src/host/direct-file.js', import.meta.url).href;
    // In a child with an 8 KiB file size limit (SIGXFSZ ignored, so the kernel returns a short
    // write, then EFBIG): 16 KiB at 0, twice (the second takes the pooled bounce buffer's path),
    // then 4 KiB at 0, which fits.
    const script = `
      import { DirectHostFile } from ${JSON.stringify(moduleUrl)};
      const h = await DirectHostFile.openDirect(${JSON.stringify(file)}, { direct: true });
      const out = [];
      for (let i = 0; i < 2; i++) {
        try { await h.write(new Uint8Array(16384).fill(1), 0); out.push('written'); }
        catch (e) { out.push(e.code + ': ' + e.message); }
      }
      await h.write(new Uint8Array(4096).fill(2), 0);
      out.push('fits');
      await h.close();
      console.log(JSON.stringify(out));
    `;
    const r = spawnSync('bash', ['-c', `trap '' XFSZ; ulimit -f 8; exec "${process.execPath}" --input-type=module -e "$0"`, script], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as string[];
    assert.equal(out.length, 3, r.stdout);
    for (const line of out.slice(0, 2)) assert.match(line, /write 16384 bytes at offset 0 of .*EFBIG/);
    assert.equal(out[2], 'fits');
    const bytes = fs.readFileSync(file);
    assert.equal(bytes.length, 8192, 'the short write reached the limit');
    assert.ok(bytes.subarray(0, 4096).every((b) => b === 2) && bytes.subarray(4096).every((b) => b === 1));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
