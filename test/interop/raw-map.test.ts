// qemu-img / qemu-io as the oracle for the raw driver and the block layer on raw files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createImage, openImage } from '../../src/index.js';
import type { ChainExtent } from '../../src/block/types.js';
import { withDir } from '../support/temp-dir.js';

interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

function qemuMap(path: string): QemuMapEntry[] {
  return JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', 'raw', path], { encoding: 'utf8' })) as QemuMapEntry[];
}

/** Our extents in qemu-img map's JSON shape. */
function asQemuMap(extents: readonly ChainExtent[]): QemuMapEntry[] {
  return extents.map((e) => ({
    start: e.offset,
    length: e.length,
    depth: e.depth,
    present: e.present,
    zero: e.zero,
    data: e.data,
    ...(e.hostOffset !== undefined ? { offset: e.hostOffset } : {}),
  }));
}

function writeAt(path: string, offset: number, data: Uint8Array): void {
  const fd = fs.openSync(path, 'r+');
  fs.writeSync(fd, data, 0, data.length, offset);
  fs.closeSync(fd);
}

test(
  'blockStatus of a sparse raw file equals qemu-img map --output=json',
  withDir(async (dir) => {
    const path = join(dir, 'sparse.raw');
    fs.writeFileSync(path, '');
    fs.truncateSync(path, 10 * 1024 * 1024);
    writeAt(path, 3 * 65536, new Uint8Array(2 * 65536).fill(1));
    writeAt(path, 2000 * 4096, new Uint8Array(4096).fill(2));
    const disk = await openImage(path, { format: 'raw', readOnly: true });
    assert.deepEqual(asQemuMap(await disk.blockStatus(0, disk.length)), qemuMap(path));
    await disk.close();
  }),
);

test(
  'a raw file whose size is not a multiple of 512: same virtual size and map as qemu-img',
  withDir(async (dir) => {
    const path = join(dir, 'odd.raw');
    fs.writeFileSync(path, '');
    fs.truncateSync(path, 1000000);
    writeAt(path, 999500, new Uint8Array(500).fill(3));
    const disk = await openImage(path, { readOnly: true });
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', 'raw', path], { encoding: 'utf8' })) as { 'virtual-size': number };
    assert.equal(disk.length, info['virtual-size']);
    assert.deepEqual(asQemuMap(await disk.blockStatus(0, disk.length)), qemuMap(path));
    await disk.close();
  }),
);

test(
  'images from createImage map like those from qemu-img create',
  withDir(async (dir) => {
    for (const [size, prealloc] of [
      [1024 * 1024, 'off'],
      [1000, 'off'],
      [1024 * 1024, 'full'],
    ] as const) {
      const ours = join(dir, `ours-${size}-${prealloc}.raw`);
      const theirs = join(dir, `theirs-${size}-${prealloc}.raw`);
      await createImage(ours, 'raw', { size, options: { preallocation: prealloc } });
      execFileSync('qemu-img', ['create', '-q', '-f', 'raw', '-o', `preallocation=${prealloc}`, theirs, String(size)]);
      assert.equal(fs.statSync(ours).size, fs.statSync(theirs).size, `size ${size} ${prealloc}`);
      assert.deepEqual(qemuMap(ours), qemuMap(theirs), `map ${size} ${prealloc}`);
    }
  }),
);

test(
  'reads equal the file after qemu-io writes, and our writes and zeroes are what qemu-io reads',
  withDir(async (dir) => {
    const path = join(dir, 'rw.raw');
    await createImage(path, 'raw', { size: 4 * 1024 * 1024, options: {} });
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 65536 131072', path]);
    const disk = await openImage(path, { format: 'raw' });
    const buf = new Uint8Array(disk.length);
    await disk.read(0, buf);
    assert.deepEqual(Buffer.from(buf), fs.readFileSync(path));
    await disk.write(1024 * 1024, new Uint8Array(65536).fill(0x6b));
    await disk.writeZeroes(65536, 65536, { mayUnmap: true });
    await disk.flush();
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'read -P 0x6b 1048576 65536', '-c', 'read -P 0 65536 65536', '-c', 'read -P 0x5a 131072 65536', path]);
    assert.deepEqual(asQemuMap(await disk.blockStatus(0, disk.length)), qemuMap(path));
    // seekData/seekHole agree with the map: first data at 0 (the first block), next hole after it.
    assert.equal(await disk.seekData(0), 0);
    assert.equal(await disk.seekHole(0), 4096);
    assert.equal(await disk.seekData(4096), 131072);
    await disk.close();
  }),
);
