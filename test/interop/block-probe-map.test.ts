// openImage probes formats and the chain merge reproduces qemu-img map, on images qemu-img made.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { openImage } from '../../src/index.js';

function qemuMap(path: string, format: string): unknown {
  return JSON.parse(execFileSync('qemu-img', ['map', '--output=json', '-f', format, path], { encoding: 'utf8' }));
}

test('a parallels image from qemu-img is probed as ploop and maps like qemu-img map', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const path = join(dir, 'p.img');
    execFileSync('qemu-img', ['create', '-q', '-f', 'parallels', path, '8M']);
    execFileSync('qemu-io', ['-f', 'parallels', '-c', 'write -P 7 1M 64k', '-c', 'write -P 8 5M 2M', path]);
    const disk = await openImage(path, { readOnly: true });
    assert.equal(disk.format, 'ploop');
    const ours = (await disk.blockStatus(0, disk.length)).map((e) => ({
      start: e.offset,
      length: e.length,
      depth: e.depth,
      present: e.present,
      zero: e.zero,
      data: e.data,
      ...(e.hostOffset !== undefined ? { offset: e.hostOffset } : {}),
    }));
    assert.deepEqual(ours, qemuMap(path, 'parallels'));
    const buf = new Uint8Array(4);
    await disk.read(5 * 1024 * 1024 + 100, buf);
    assert.deepEqual([...buf], [8, 8, 8, 8]);
    await disk.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
