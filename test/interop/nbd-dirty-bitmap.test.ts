import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runStatus, startServer } from './support/serve-process.js';

const SERVE_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support/serve-main.js');

function tmp(): string {
  return fs.mkdtempSync(os.tmpdir() + '/vdisk-');
}

/**
 * A 64 MiB qcow2 with data everywhere below 8 MiB, then a persistent bitmap
 * b0 (64 KiB granularity) and writes that qemu-io records in it: b0 is dirty
 * exactly where the later writes went (some unaligned to its granularity).
 */
function makeImageWithBitmap(file: string): void {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', file, '64M']);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x01 0 8M', file]);
  run('qemu-img', ['bitmap', '--add', '-g', '64k', file, 'b0']);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 64k', '-c', 'write -P 0x11 10M 4k', '-c', 'write -P 0x22 33M 100k', '-c', 'write -z 40M 1M', file]);
}

test('nbdinfo --map=qemu:dirty-bitmap:b0 reads the same bitmap from vdisk serve -B b0 as from qemu-nbd -B b0', async () => {
  const dir = tmp();
  try {
    makeImageWithBitmap(`${dir}/a.qcow2`);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'qcow2', '-t', '-r', '-B', 'b0', `${dir}/a.qcow2`], `${dir}/v.sock`);
    const q = await startServer(['qemu-nbd', '-k', `${dir}/q.sock`, '-f', 'qcow2', '-t', '-r', '-B', 'b0', `${dir}/a.qcow2`], `${dir}/q.sock`);
    try {
      const ours = run('nbdinfo', ['--map=qemu:dirty-bitmap:b0', v.uri]);
      assert.equal(ours, run('nbdinfo', ['--map=qemu:dirty-bitmap:b0', q.uri]));
      assert.match(ours, /dirty/);
      // Both contexts are listed, as qemu lists them.
      const listed = (uri: string): string[] => run('nbdinfo', ['--list', '--json', uri]).match(/"qemu:dirty-bitmap:[^"]*"/g) ?? [];
      assert.deepEqual(listed(v.uri), listed(q.uri));
      // qemu's own client reads the bitmap through x-dirty-bitmap (dirty shows as data: false).
      const map = (sock: string): string =>
        run('qemu-img', ['map', '--output=json', '--image-opts', `driver=nbd,server.type=unix,server.path=${sock},x-dirty-bitmap=qemu:dirty-bitmap:b0`]);
      assert.equal(map(`${dir}/v.sock`), map(`${dir}/q.sock`));
    } finally {
      assert.equal(await v.stop(), 0);
      await q.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('vdisk serve -B of a missing bitmap fails to start with qemu-nbd\'s reason', () => {
  const dir = tmp();
  try {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/a.qcow2`, '1M']);
    const r = runStatus(process.execPath, [SERVE_MAIN, '-k', `${dir}/v.sock`, '-B', 'nope', `${dir}/a.qcow2`]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /Bitmap 'nope' is not found/);
    assert.equal(fs.existsSync(`${dir}/v.sock`), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

