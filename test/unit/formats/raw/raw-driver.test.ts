import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { isVdiskError } from '../../../../src/errors.js';
import type { BlockDriver, LayerExtent } from '../../../../src/formats/driver.js';
import { rawFormat } from '../../../../src/formats/raw/index.js';
import { RawDriver } from '../../../../src/formats/raw/raw-driver.js';
import { NodeHostFile } from '../../../../src/host/node-file.js';
import { withDir } from '../../../support/temp-dir.js';

const K = 4096;
const MiB = 1024 * 1024;

async function openRw(path: string): Promise<BlockDriver> {
  return rawFormat.open(path, { readOnly: false });
}

function brief(extents: readonly LayerExtent[]): string[] {
  return extents.map((e) => `${e.length} ${e.data ? 'data' : 'zero'}@${e.hostOffset}`);
}

test(
  'create rounds the size up to 512 and writes the first block, as qemu-img create does',
  withDir(async (dir) => {
    const path = join(dir, 'a.raw');
    await rawFormat.create(path, { size: 1000000, options: {} });
    assert.equal(fs.statSync(path).size, 1000448);
    const d = await openRw(path);
    assert.equal(d.length, 1000448);
    assert.deepEqual(brief(await d.blockStatus(0, d.length)), [`${K} data@0`, `${1000448 - K} zero@${K}`]);
    assert.deepEqual(await d.info(), { format: 'raw', virtualSize: 1000448 });
    await d.close();
  }),
);

test(
  'create with preallocation=full writes every byte; metadata, unknown options and backing files are refused',
  withDir(async (dir) => {
    const path = join(dir, 'full.raw');
    await rawFormat.create(path, { size: MiB, options: { preallocation: 'full' } });
    const d = await openRw(path);
    assert.deepEqual(brief(await d.blockStatus(0, MiB)), [`${MiB} data@0`]);
    await d.close();
    await rawFormat.create(join(dir, 'falloc.raw'), { size: MiB, options: { preallocation: 'falloc' } });
    assert.ok(fs.statSync(join(dir, 'falloc.raw')).blocks * 512 >= MiB);
    await assert.rejects(rawFormat.create(path, { size: MiB, options: { preallocation: 'metadata' } }), /Unsupported preallocation mode: metadata/);
    await assert.rejects(rawFormat.create(path, { size: MiB, options: { cluster_size: '65536' } }), /Invalid parameter 'cluster_size'/);
    await assert.rejects(rawFormat.create(path, { size: MiB, options: {}, backingFile: 'b' }), /Backing file not supported for file format 'raw'/);
  }),
);

test(
  'reads return the file\'s bytes and zeros past its end; writes land at the same offsets',
  withDir(async (dir) => {
    const path = join(dir, 'odd.raw');
    fs.writeFileSync(path, new Uint8Array(1000).fill(7));
    const d = await openRw(path);
    assert.equal(d.length, 1024);
    const buf = new Uint8Array(1024).fill(0xff);
    await d.read(0, buf);
    assert.equal(buf[999], 7);
    assert.equal(buf[1000], 0);
    assert.deepEqual(brief(await d.blockStatus(0, 1024)), ['1000 data@0', '24 zero@1000']);
    await d.write(1020, new Uint8Array([1, 2, 3, 4]), { fua: true });
    assert.equal(fs.statSync(path).size, 1024);
    assert.deepEqual([...fs.readFileSync(path).subarray(1020)], [1, 2, 3, 4]);
    await d.close();
  }),
);

test(
  'writeZeroes with mayUnmap punches a hole; without it the range reads zero; discard punches',
  withDir(async (dir) => {
    const path = join(dir, 'z.raw');
    fs.writeFileSync(path, new Uint8Array(16 * K).fill(9));
    const d = await openRw(path);
    await d.writeZeroes(K, 2 * K, { mayUnmap: true });
    assert.deepEqual(brief(await d.blockStatus(0, 16 * K)), [`${K} data@0`, `${2 * K} zero@${K}`, `${13 * K} data@${3 * K}`]);
    await d.writeZeroes(8 * K, K);
    await d.discard(12 * K, 4 * K);
    const buf = new Uint8Array(16 * K);
    await d.read(0, buf);
    const zeroAt = (o: number): boolean => buf.subarray(o, o + K).every((b) => b === 0);
    assert.deepEqual([0, 1, 2, 3, 8, 12, 15].map((c) => zeroAt(c * K)), [false, true, true, false, true, true, true]);
    assert.deepEqual(brief(await d.blockStatus(12 * K, 4 * K)), [`${4 * K} zero@${12 * K}`]);
    await d.close();
  }),
);

test(
  'resize grows, shrinks only when asked to, and preallocates the new range',
  withDir(async (dir) => {
    const path = join(dir, 'r.raw');
    await rawFormat.create(path, { size: MiB, options: {} });
    const d = await openRw(path);
    await d.resize(1500000);
    assert.equal(fs.statSync(path).size, 1500000);
    assert.equal(d.length, 1500160);
    await assert.rejects(d.resize(MiB), /Use the --shrink option/);
    await d.resize(MiB, { shrink: true });
    assert.equal(d.length, MiB);
    await d.resize(2 * MiB, { preallocation: 'full' });
    assert.deepEqual(brief(await d.blockStatus(MiB, MiB)), [`${MiB} data@${MiB}`]);
    await assert.rejects(d.resize(3 * MiB, { preallocation: 'metadata' }), (e) => isVdiskError(e, 'ENOTSUP'));
    await d.close();
  }),
);

test(
  'check is ENOTSUP with qemu-img\'s message; raw never probes and refuses a backing',
  withDir(async (dir) => {
    const path = join(dir, 'c.raw');
    await rawFormat.create(path, { size: MiB, options: {} });
    const d = await openRw(path);
    await assert.rejects(d.check('none'), (e) => isVdiskError(e, 'ENOTSUP') && e.message === 'This image format does not support checks');
    assert.equal(rawFormat.probe(new Uint8Array(512)), false);
    assert.equal(d.backingRef, null);
    assert.throws(() => d.setBacking({ length: 1, read: async () => undefined }), (e) => isVdiskError(e, 'ENOTSUP'));
    await d.close();
  }),
);

test(
  'a read-only raw image refuses writes',
  withDir(async (dir) => {
    const path = join(dir, 'ro.raw');
    await rawFormat.create(path, { size: MiB, options: {} });
    const d = await rawFormat.open(path, { readOnly: true });
    assert.equal(d.readOnly, true);
    await assert.rejects(d.write(0, new Uint8Array(1)), (e) => isVdiskError(e, 'EPERM'));
    await d.close();
  }),
);

test(
  'block status asks SEEK_DATA once per hole: where a hole ends, data begins without another lseek',
  withDir(async (dir) => {
    const path = join(dir, 'h.raw');
    // Data, hole, data, hole, data: 64 KiB each.
    const fd = fs.openSync(path, 'w');
    for (const at of [0, 2, 4]) fs.writeSync(fd, new Uint8Array(16 * K).fill(3), 0, 16 * K, at * 16 * K);
    fs.closeSync(fd);
    const host = await NodeHostFile.open(path, { readOnly: true });
    const asked: string[] = [];
    const counting = new Proxy(host, {
      get(target, name) {
        if (name === 'seekData' || name === 'seekHole') {
          return async (at: number) => {
            asked.push(`${name === 'seekData' ? 'data' : 'hole'}@${at}`);
            return name === 'seekData' ? target.seekData(at) : target.seekHole(at);
          };
        }
        const value: unknown = Reflect.get(target, name, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const d = await RawDriver.fromHost(counting);
    const S = 16 * K;
    assert.deepEqual(brief(await d.blockStatus(0, 5 * S)), [`${S} data@0`, `${S} zero@${S}`, `${S} data@${2 * S}`, `${S} zero@${3 * S}`, `${S} data@${4 * S}`]);
    assert.deepEqual(asked, [`data@0`, `hole@0`, `data@${S}`, `hole@${2 * S}`, `data@${3 * S}`, `hole@${4 * S}`]);
    await d.close();
  }),
);
