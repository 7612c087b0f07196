import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHeaderCluster, serializeHeaderCluster } from '../../../../src/formats/qcow2/header.js';
import { parseCreateSettings, planQcow2Layout } from '../../../../src/formats/qcow2/create.js';
import { isVdiskError, type ErrorCode } from '../../../../src/errors.js';

function image(options: Record<string, string> = {}, size = 1 << 30): { cluster0: Uint8Array; fileSize: number } {
  const layout = planQcow2Layout(parseCreateSettings({ size, options }));
  return { cluster0: (layout.clusters.get(0) ?? new Uint8Array(0)).slice(), fileSize: layout.fileLength };
}

function mutate(edit: (v: DataView, b: Uint8Array) => void, options: Record<string, string> = {}) {
  const { cluster0, fileSize } = image(options);
  edit(new DataView(cluster0.buffer), cluster0);
  return () => parseHeaderCluster(cluster0, { file: 'a.qcow2', fileSize });
}

function rejects(fn: () => unknown, code: ErrorCode, pattern: RegExp): void {
  assert.throws(fn, (e) => isVdiskError(e, code) && pattern.test(e.message) && e.message.startsWith("Cannot open 'a.qcow2': "));
}

test('a valid header parses and serialises back unchanged', () => {
  const { cluster0, fileSize } = image({ lazy_refcounts: 'on' });
  const parsed = parseHeaderCluster(cluster0, { file: 'a.qcow2', fileSize });
  assert.equal(parsed.header.size, 1 << 30);
  assert.equal(parsed.header.version, 3);
  assert.equal(parsed.header.compatibleFeatures, 1n);
  assert.deepEqual(serializeHeaderCluster(parsed, 65536), cluster0);
});

test('bad magic, version and cluster bits are refused', () => {
  rejects(mutate((v) => v.setUint32(0, 0x12345678)), 'ECORRUPT', /not in qcow2 format \(magic 0x12345678/);
  rejects(mutate((v) => v.setUint32(4, 4)), 'ENOTSUP', /unsupported qcow2 version 4/);
  rejects(mutate((v) => v.setUint32(20, 22)), 'ECORRUPT', /cluster size: 2\^22/);
  rejects(mutate((v) => v.setUint32(20, 8)), 'ECORRUPT', /cluster_bits must be between 9 and 21/);
});

test('header_length must be at least 104, a multiple of 8 and inside the cluster', () => {
  rejects(mutate((v) => v.setUint32(100, 96)), 'ECORRUPT', /header_length 0x60 is too short/);
  rejects(mutate((v) => v.setUint32(100, 108)), 'ECORRUPT', /header_length 0x6c is not a multiple of 8/);
  rejects(mutate((v) => v.setUint32(100, 0x20000)), 'ECORRUPT', /header_length 0x20000 exceeds the cluster size 0x10000/);
});

test('unknown incompatible features are named from the feature table', () => {
  rejects(mutate((v) => v.setBigUint64(72, 1n << 40n)), 'ENOTSUP', /Unsupported IMAGE feature\(s\): Unknown incompatible feature: 10000000000/);
  // Rename the "dirty bit" entry to bit 20 and set that bit: QEMU prints the table's name.
  rejects(
    mutate((v, b) => {
      b[0x70 + 8 + 1] = 20;
      v.setBigUint64(72, 1n << 20n);
    }),
    'ENOTSUP',
    /Unsupported IMAGE feature\(s\): dirty bit$/,
  );
});

test('tables that are misaligned, past the end of the file or too large are refused', () => {
  rejects(mutate((v) => v.setBigUint64(40, 0x30001n)), 'ECORRUPT', /L1 table offset 0x30001 is not aligned to the cluster size 0x10000/);
  rejects(mutate((v) => v.setBigUint64(40, 0x50000n)), 'ECORRUPT', /L1 table at 0x50000 \(0x10 bytes\) extends past end of file/);
  rejects(mutate((v) => v.setUint32(36, 1)), 'ECORRUPT', /L1 table is too small/);
  rejects(mutate((v) => v.setUint32(36, 0x400001)), 'ECORRUPT', /active L1 table too large/);
  rejects(mutate((v) => v.setBigUint64(48, 0x10008n)), 'ECORRUPT', /reference count table offset 0x10008 is not aligned/);
  rejects(mutate((v) => v.setUint32(56, 0)), 'ECORRUPT', /does not contain a reference count table/);
  rejects(mutate((v) => v.setUint32(56, 129)), 'ECORRUPT', /reference count table too large/);
  rejects(mutate((v) => v.setUint32(60, 65537)), 'ECORRUPT', /too many snapshots/);
  rejects(mutate((v) => { v.setUint32(60, 1); v.setBigUint64(64, 0x1200n); }), 'ECORRUPT', /snapshot table offset 0x1200 is not aligned/);
  rejects(mutate((v) => v.setUint32(96, 7)), 'ECORRUPT', /refcount_order 7 is too large/);
});

test('compression type and its feature bit must agree', () => {
  rejects(mutate((_v, b) => { b[104] = 1; }), 'ECORRUPT', /compression type 1 is inconsistent/);
  rejects(mutate((_v, b) => { b[104] = 2; }), 'ENOTSUP', /unknown compression type 2/);
  rejects(mutate((v) => v.setBigUint64(72, 8n)), 'ECORRUPT', /compression type 0 is inconsistent/);
});

test('extended L2 needs clusters of 16 KiB', () => {
  rejects(mutate((v) => v.setBigUint64(72, 0x10n), { cluster_size: '4096' }), 'ECORRUPT', /extended L2 entries need clusters of at least 16 KiB/);
});

test('the backing file name must lie in cluster 0 and be at most 1023 bytes', () => {
  rejects(mutate((v) => { v.setBigUint64(8, 0x10001n); v.setUint32(16, 4); }), 'ECORRUPT', /backing file name offset 0x10001 lies outside cluster 0/);
  rejects(mutate((v) => { v.setBigUint64(8, 0x1000n); v.setUint32(16, 1024); }), 'ECORRUPT', /backing file name too long/);
  rejects(mutate((v) => { v.setBigUint64(8, 0xff00n); v.setUint32(16, 0x200); }), 'ECORRUPT', /backing file name too long \(0x200 bytes at 0xff00, at most 0x100\)/);
});

test('an extension running past its area is refused; unknown extensions survive a rewrite', () => {
  rejects(mutate((v) => v.setUint32(0x74, 0xfff0)), 'ECORRUPT', /header extension 0x6803f857 at 0x70 with length 0xfff0 overruns/);
  const { cluster0, fileSize } = image({}, 1 << 20);
  const parsed = parseHeaderCluster(cluster0, { file: 'a.qcow2', fileSize });
  const withUnknown = { ...parsed, extensions: { ...parsed.extensions, unknown: [{ magic: 0x12345678, data: new Uint8Array([1, 2, 3]) }] } };
  const again = parseHeaderCluster(serializeHeaderCluster(withUnknown, 65536), { file: 'a.qcow2', fileSize });
  assert.deepEqual(again.extensions.unknown, [{ magic: 0x12345678, data: new Uint8Array([1, 2, 3]) }]);
});
