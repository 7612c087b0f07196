import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { nativeHost } from '../../../src/host/native.js';

const MiB = 1024 * 1024;

function withFile(size: number, fn: (fd: number, path: string) => void): void {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  const path = join(dir, 'f');
  const fd = fs.openSync(path, 'w+');
  try {
    fs.writeSync(fd, new Uint8Array(size).fill(0x5a), 0, size, 0);
    fn(fd, path);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// CI builds the addon (npm ci runs prepare → build:native); it must be there.
const native = nativeHost();

test('the native addon is built and loads', () => {
  assert.ok(native, 'native/build/Release/vdisk_native.node is missing: run npm run build:native');
});

test('a punched hole is seen by seekData and seekHole and reads as zeros', () => {
  assert.ok(native);
  withFile(4 * MiB, (fd) => {
    assert.equal(native.seekHole(fd, 0), 4 * MiB);
    assert.equal(native.punchHole(fd, MiB, MiB), true);
    assert.equal(native.seekData(fd, 0), 0);
    assert.equal(native.seekHole(fd, 0), MiB);
    assert.equal(native.seekData(fd, MiB), 2 * MiB);
    assert.equal(native.seekHole(fd, 2 * MiB), 4 * MiB);
    const buf = Buffer.alloc(16, 1);
    fs.readSync(fd, buf, 0, 16, MiB + 100);
    assert.ok(buf.every((b) => b === 0));
    assert.equal(fs.fstatSync(fd).size, 4 * MiB);
  });
});

test('seekData past the last data is null; seekHole past the end returns the offset', () => {
  assert.ok(native);
  withFile(MiB, (fd) => {
    assert.equal(native.punchHole(fd, 0, MiB), true);
    assert.equal(native.seekData(fd, 0), null);
    assert.equal(native.seekData(fd, 5 * MiB), null);
    assert.equal(native.seekHole(fd, 5 * MiB), 5 * MiB);
  });
});

test('zeroRange zeroes and allocate reserves space without changing content', () => {
  assert.ok(native);
  withFile(MiB, (fd) => {
    assert.equal(native.zeroRange(fd, 4096, 8192), true);
    const buf = Buffer.alloc(8192 + 2);
    fs.readSync(fd, buf, 0, buf.length, 4095);
    assert.equal(buf[0], 0x5a);
    assert.ok(buf.subarray(1, 8193).every((b) => b === 0));
    assert.equal(buf[8193], 0x5a);
    assert.equal(native.allocate(fd, MiB, MiB), true);
    assert.equal(fs.fstatSync(fd).size, 2 * MiB);
    assert.equal(native.zeroRange(fd, 0, 0), true);
  });
});

test('bad arguments throw instead of crashing, and a bad fd throws with its errno code', () => {
  assert.ok(native);
  const host = native as unknown as Record<string, (...args: unknown[]) => unknown>;
  assert.throws(() => host['punchHole']?.('x', 0, 1), TypeError);
  assert.throws(() => host['seekData']?.(0, -1), RangeError);
  assert.throws(() => host['seekData']?.(0, 2 ** 60), RangeError);
  assert.throws(() => host['setLock']?.(0, 0, 1, 'x'), TypeError);
  assert.throws(() => native.seekData(987654, 0), (e: unknown) => (e as { code?: string }).code === 'EBADF');
});

test('OFD locks conflict between two opens of the same file and are released', () => {
  assert.ok(native);
  withFile(4096, (fd, path) => {
    const other = fs.openSync(path, 'r+');
    try {
      assert.equal(native.setLock(fd, 100, 1, 'r'), true);
      assert.equal(native.setLock(other, 100, 1, 'r'), true, 'shared locks coexist');
      assert.equal(native.setLock(other, 100, 1, 'w'), false, 'exclusive conflicts with a shared lock');
      assert.deepEqual(native.getLock(other, 100, 1, 'w'), { type: 'r', start: 100, length: 1 });
      assert.equal(native.getLock(other, 200, 1, 'w'), null);
      assert.equal(native.setLock(fd, 100, 1, 'u'), true);
      assert.equal(native.setLock(other, 100, 1, 'w'), true);
      assert.deepEqual(native.getLock(fd, 0, 0, 'r'), { type: 'w', start: 100, length: 1 });
    } finally {
      fs.closeSync(other);
    }
  });
});

test('without the addon, nativeHost() is null and NodeHostFile falls back to "all data"', () => {
  const hostDir = fileURLToPath(new URL('../../../src/host/', import.meta.url));
  const script = `
    import { nativeHost } from ${JSON.stringify(join(hostDir, 'native.js'))};
    import { NodeHostFile } from ${JSON.stringify(join(hostDir, 'node-file.js'))};
    import * as fs from 'node:fs';
    const path = process.argv[1];
    fs.writeFileSync(path, new Uint8Array(8192));
    const f = await NodeHostFile.open(path);
    const r = [nativeHost() === null, await f.punchHole(0, 4096), await f.seekData(0), await f.seekHole(0), await f.seekData(9000)];
    await f.close();
    console.log(JSON.stringify(r));`;
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script, join(dir, 'f')], {
      env: { ...process.env, VDISK_NO_NATIVE: '1' },
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), [true, false, 0, 8192, null]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
