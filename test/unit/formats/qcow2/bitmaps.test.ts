import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeBitmapTableEntry, parseBitmapDirectory } from '../../../../src/formats/qcow2/bitmaps.js';
import { isVdiskError } from '../../../../src/errors.js';

function entry(name: string, o: { tableOffset?: bigint; type?: number; gran?: number; flags?: number } = {}): Uint8Array {
  const n = new TextEncoder().encode(name);
  const out = new Uint8Array(Math.ceil((24 + n.length) / 8) * 8);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, o.tableOffset ?? 0x40000n);
  v.setUint32(8, 1);
  v.setUint32(12, o.flags ?? 2);
  v.setUint8(16, o.type ?? 1);
  v.setUint8(17, o.gran ?? 16);
  v.setUint16(18, n.length);
  out.set(n, 24);
  return out;
}

const ctx = (size: number, nb = 1) => ({ file: 'a.qcow2', ext: { nbBitmaps: nb, directorySize: size, directoryOffset: 0x30000 }, clusterSize: 0x10000, fileSize: 0x100000 });

test('the bitmap directory parses names, flags and tables', () => {
  const dir = new Uint8Array([...entry('b0'), ...entry('second', { flags: 1 })]);
  const bms = parseBitmapDirectory(dir, ctx(dir.length, 2));
  assert.deepEqual(bms.map((b) => [b.name, b.flags, b.tableOffset, b.granularityBits]), [['b0', 2, 0x40000, 16], ['second', 1, 0x40000, 16]]);
});

test('invalid directory entries are refused', () => {
  for (const bad of [entry('x', { type: 2 }), entry('x', { gran: 8 }), entry('x', { flags: 8 }), entry('x', { tableOffset: 0x40200n }), entry('x', { tableOffset: 0x200000n })]) {
    assert.throws(() => parseBitmapDirectory(bad, ctx(bad.length)), (e) => isVdiskError(e, 'ECORRUPT'));
  }
  const dup = new Uint8Array([...entry('same'), ...entry('same')]);
  assert.throws(() => parseBitmapDirectory(dup, ctx(dup.length, 2)), /duplicate bitmap name/);
  const one = entry('x');
  assert.throws(() => parseBitmapDirectory(one, ctx(one.length, 2)), /overruns the directory/);
});

test('bitmap table entries decode to zeros, ones, data or invalid', () => {
  assert.deepEqual(decodeBitmapTableEntry(0n, 0x10000), { kind: 'zeros' });
  assert.deepEqual(decodeBitmapTableEntry(1n, 0x10000), { kind: 'ones' });
  assert.deepEqual(decodeBitmapTableEntry(0x50000n, 0x10000), { kind: 'data', offset: 0x50000 });
  assert.equal(decodeBitmapTableEntry(0x50001n, 0x10000).kind, 'invalid');
  assert.equal(decodeBitmapTableEntry(0x50200n, 0x10000).kind, 'invalid');
  assert.equal(decodeBitmapTableEntry(1n << 60n, 0x10000).kind, 'invalid');
});
