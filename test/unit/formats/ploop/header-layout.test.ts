import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isVdiskError } from '../../../../src/errors.js';
import { decodeHeader, encodeHeader, isPloopHeader, MAGIC_V1, type PloopHeader } from '../../../../src/formats/ploop/header.js';
import { batPageOf, layoutOf } from '../../../../src/formats/ploop/layout.js';
import { newImageHeader, parseCreateOptions } from '../../../../src/formats/ploop/create.js';
import { scanBat } from '../../../../src/formats/ploop/bat-scan.js';
import {
  DIRTY_BITMAP_MAGIC,
  encodeExtension,
  FEATURE_NECESSARY,
  FEATURE_TRANSIT,
  parseExtension,
  planForWriter,
} from '../../../../src/formats/ploop/extension.js';

const base: PloopHeader = newImageHeader(10 * 1024 * 1024, 1024 * 1024);

function encoded(h: PloopHeader): Uint8Array {
  const b = new Uint8Array(64);
  encodeHeader(h, b);
  return b;
}

function expectError(fn: () => unknown, code: string, field: string, text: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isVdiskError(e), String(e));
    assert.equal(e.code, code);
    assert.equal(e.context.field, field);
    assert.equal(e.context.file, 'x.hds');
    assert.match(e.message, text);
    return true;
  });
}

test('header round-trips through encode and decode for v2 and v1', () => {
  assert.deepEqual(decodeHeader(encoded(base), 'x.hds'), base);
  const v1 = { ...base, version: 1 as const };
  const bytes = encoded(v1);
  assert.equal(String.fromCharCode(...bytes.subarray(0, 16)), MAGIC_V1);
  assert.deepEqual(decodeHeader(bytes, 'x.hds'), v1);
  assert.ok(isPloopHeader(bytes));
});

test('v1 header ignores the high 32 bits of nb_sectors, as QEMU does', () => {
  const bytes = encoded({ ...base, version: 1 });
  new DataView(bytes.buffer).setUint32(40, 7, true);
  assert.equal(decodeHeader(bytes, 'x.hds').sizeSectors, base.sizeSectors);
});

test('a bad signature or version is refused naming the field', () => {
  const bad = encoded(base);
  bad[0] = 0x78;
  expectError(() => decodeHeader(bad, 'x.hds'), 'EINVAL', 'magic', /not in Parallels format: bad signature/);
  assert.equal(isPloopHeader(bad), false);
  const v3 = encoded(base);
  new DataView(v3.buffer).setUint32(16, 3, true);
  expectError(() => decodeHeader(v3, 'x.hds'), 'EINVAL', 'version', /version 3/);
  expectError(() => decodeHeader(new Uint8Array(10), 'x.hds'), 'EINVAL', 'magic', /only 10 bytes/);
});

test('layout refuses cluster size 0, too big clusters and catalogs, and BATs that do not fit', () => {
  const size = 1024 * 1024;
  expectError(() => layoutOf({ ...base, clusterSectors: 0 }, size, 'x.hds'), 'EINVAL', 'tracks', /zero sectors per track/);
  expectError(() => layoutOf({ ...base, clusterSectors: 5_000_000 }, size, 'x.hds'), 'EFBIG', 'tracks', /too big/);
  expectError(() => layoutOf({ ...base, batEntries: 0x20000000 }, size, 'x.hds'), 'EFBIG', 'bat_entries', /catalog too large/);
  expectError(() => layoutOf({ ...base, batEntries: 300000, sizeSectors: 2048 }, size, 'x.hds'), 'ECORRUPT', 'bat_entries', /past end of file \(size 0x100000\)/);
  expectError(() => layoutOf({ ...base, batEntries: 5 }, size, 'x.hds'), 'ECORRUPT', 'bat_entries', /do not cover the virtual size/);
  expectError(() => layoutOf({ ...base, dataOff: 0 }, 100, 'x.hds'), 'ECORRUPT', 'bat_entries', /past end of file/);
  expectError(() => layoutOf({ ...base, dataOff: 4096 }, size, 'x.hds'), 'ECORRUPT', 'data_off', /past end of file/);
  const small = newImageHeader(64 * 1024 * 1024, 4096);
  expectError(() => layoutOf({ ...small, dataOff: 1 }, 4 * 1024 * 1024, 'x.hds'), 'ECORRUPT', 'data_off', /inside the BAT/);
});

test('cluster sizes that are not a power of two are accepted, as QEMU does', () => {
  const h = newImageHeader(10 * 1024 * 1024, 63 * 512);
  const l = layoutOf(h, h.dataOff * 512, 'x.hds');
  assert.equal(l.clusterSize, 63 * 512);
  assert.equal(l.batUnit, 63 * 512);
  assert.equal(layoutOf({ ...h, version: 1 }, h.dataOff * 512, 'x.hds').batUnit, 512);
});

test('create options follow qemu-img: rounding to sectors, unknown options and size limits refused', () => {
  assert.deepEqual(parseCreateOptions('a', { size: 1001, options: { cluster_size: '1000' } }), { size: 1024, clusterSize: 1024 });
  assert.deepEqual(parseCreateOptions('a', { size: 1, options: {} }), { size: 512, clusterSize: 1024 * 1024 });
  assert.throws(() => parseCreateOptions('a', { size: 1, options: { foo: '1' } }), /Invalid parameter 'foo'/);
  assert.throws(() => parseCreateOptions('a', { size: 1, options: { cluster_size: '0' } }), /too large for this cluster size/);
  assert.throws(() => parseCreateOptions('a', { size: 3 * 2 ** 40, options: { cluster_size: '512' } }), /too large for this cluster size/);
  assert.throws(() => parseCreateOptions('a', { size: 1, options: {}, backingFile: 'b' }), /Backing file not supported/);
});

test('BAT pages: page 0 holds 1008 entries after the header, later pages 1024', () => {
  assert.equal(batPageOf(0), 0);
  assert.equal(batPageOf(1007), 0);
  assert.equal(batPageOf(1008), 1);
  assert.equal(batPageOf(1008 + 1023), 1);
  assert.equal(batPageOf(1008 + 1024), 2);
});

test('scanBat finds entries outside the file, inside the header, and duplicates', () => {
  const h = newImageHeader(8 * 65536, 65536);
  const layout = layoutOf(h, 65536 * 4, 'x.hds');
  const entries = [1, 0, 2, 2, 0, 9, 0, 3];
  const scan = scanBat(layout, (i) => entries[i] ?? 0, 65536 * 4);
  assert.deepEqual(
    scan.problems.map((p) => [p.index, p.kind]),
    [[3, 'duplicate'], [5, 'outside']],
  );
  assert.equal(scan.allocated, 4);
  assert.equal(scan.dataEnd, 65536 * 4);
  const header = scanBat({ ...layout, dataStart: 2 * 65536 }, (i) => entries[i] ?? 0, 65536 * 4);
  assert.deepEqual(header.problems[0], { index: 0, kind: 'header', hostOffset: 65536 });
});

test('format extension: parse/encode round trip, checksum checked, NECESSARY/TRANSIT rule', () => {
  const transit = { magic: 0x1234n, flags: FEATURE_TRANSIT, data: new Uint8Array([1, 2, 3]) };
  const bitmap = { magic: DIRTY_BITMAP_MAGIC, flags: 0n, data: new Uint8Array(40) };
  const cluster = encodeExtension([bitmap, transit], 4096);
  assert.ok(cluster);
  const parsed = parseExtension(cluster);
  assert.ok(parsed.ok);
  assert.deepEqual(parsed.features, [bitmap, transit]);
  assert.deepEqual(planForWriter(parsed), { action: 'keep', features: [transit], changed: true });
  assert.deepEqual(planForWriter(parseExtension(encodeExtension([bitmap], 4096) as Uint8Array)), { action: 'drop' });
  const necessary = encodeExtension([{ magic: 0x99n, flags: FEATURE_NECESSARY, data: new Uint8Array(0) }], 4096) as Uint8Array;
  assert.deepEqual(planForWriter(parseExtension(necessary)), { action: 'refuse', magic: 0x99n });
  cluster[100] = (cluster[100] ?? 0) ^ 1;
  assert.deepEqual(parseExtension(cluster), { ok: false, reason: 'checksum mismatch' });
  assert.equal(encodeExtension([{ magic: 1n, flags: 0n, data: new Uint8Array(5000) }], 4096), null);
});
