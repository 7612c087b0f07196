import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compressedRefRange,
  decodeL1Entry,
  decodeL2Entry,
  encodeCompressedEntry,
  encodeL1Entry,
  encodeL2Entry,
  plainDataOffset,
  readL2Entry,
  subclusterState,
  writeL2Entry,
  type L2Geometry,
  type L2Mapping,
} from '../../../../src/formats/qcow2/l2-entry.js';
import { isVdiskError } from '../../../../src/errors.js';

const std: L2Geometry = { clusterBits: 16, extendedL2: false, externalDataFile: false };
const ext: L2Geometry = { clusterBits: 16, extendedL2: true, externalDataFile: false };
const loc = { file: 't.qcow2', tableOffset: 0x30000, index: 5 };
const dec = (e: bigint, b: bigint | null = null, g: L2Geometry = std): L2Mapping => decodeL2Entry(e, b, { geometry: g, loc });
const COPIED = 1n << 63n;

test('standard L2 entries decode to the five QEMU cluster kinds', () => {
  assert.deepEqual(dec(0n), { kind: 'unallocated' });
  assert.deepEqual(dec(1n), { kind: 'zero-plain' });
  assert.deepEqual(dec(0x50000n | 1n | COPIED), { kind: 'zero-alloc', hostOffset: 0x50000, copied: true });
  assert.deepEqual(dec(0x50000n | COPIED), { kind: 'normal', hostOffset: 0x50000, copied: true });
  assert.deepEqual(dec(0x50000n), { kind: 'normal', hostOffset: 0x50000, copied: false });
});

test('offset 0 with COPIED is a normal cluster only with an external data file', () => {
  assert.deepEqual(dec(COPIED, null, { ...std, externalDataFile: true }), { kind: 'normal', hostOffset: 0, copied: true });
  assert.deepEqual(dec(COPIED), { kind: 'unallocated' });
});

test('reserved bits, misaligned offsets and compressed COPIED are ECORRUPT naming table and index', () => {
  for (const bad of [0x50000n | 2n, 0x50000n | (1n << 56n), 0x50200n, (1n << 62n) | COPIED]) {
    assert.throws(() => dec(bad), (e: unknown) => isVdiskError(e, 'ECORRUPT') && /0x30000 index 5/.test(e.message));
  }
  assert.throws(() => decodeL1Entry(0x50000n | 1n, { clusterBits: 16, loc }), (e: unknown) => isVdiskError(e, 'ECORRUPT'));
});

test('compressed descriptor follows QEMU csize math for every cluster size', () => {
  for (let bits = 9; bits <= 21; bits++) {
    const g = { ...std, clusterBits: bits };
    const coffset = 0x12345 + bits;
    const len = Math.min(300 + bits * 7, (1 << bits) - 1);
    const e = encodeCompressedEntry(coffset, len, bits);
    const m = dec(e, null, g);
    assert.equal(m.kind, 'compressed');
    if (m.kind !== 'compressed') return;
    assert.equal(m.hostOffset, coffset);
    const nb = Math.floor((coffset + len - 1) / 512) - Math.floor(coffset / 512) + 1;
    assert.equal(m.sectors, nb);
    assert.equal(m.sizeBytes, nb * 512 - (coffset % 512));
    assert.ok(m.sizeBytes >= len);
    assert.deepEqual(compressedRefRange(m), { start: coffset - (coffset % 512), length: nb * 512 });
    assert.equal(encodeL2Entry(m, g).entry, e);
  }
});

test('extended L2 bitmaps collapse to uniform kinds or stay per subcluster', () => {
  assert.deepEqual(dec(0n, 0n, ext), { kind: 'unallocated' });
  assert.deepEqual(dec(0n, 0xffffffffn << 32n, ext), { kind: 'zero-plain' });
  assert.deepEqual(dec(0x70000n | COPIED, 0xffffffffn, ext), { kind: 'normal', hostOffset: 0x70000, copied: true });
  assert.deepEqual(dec(0x70000n | COPIED, 0xffffffffn << 32n, ext), { kind: 'zero-alloc', hostOffset: 0x70000, copied: true });
  const m = dec(0x70000n | COPIED, (0x0000000cn << 32n) | 0x3n, ext);
  assert.deepEqual(m, { kind: 'subclusters', hostOffset: 0x70000, copied: true, allocMask: 3, zeroMask: 12 });
  assert.deepEqual([0, 1, 2, 3, 4, 31].map((i) => subclusterState(m, i)), ['data', 'data', 'zero', 'zero', 'unallocated', 'unallocated']);
  const hi = dec(0n, 1n << 63n, ext);
  assert.equal(subclusterState(hi, 31), 'zero');
  assert.equal(subclusterState(hi, 30), 'unallocated');
});

test('invalid extended L2 bitmaps are ECORRUPT', () => {
  assert.throws(() => dec(0x70000n, (1n << 32n) | 1n, ext), (e: unknown) => isVdiskError(e, 'ECORRUPT'));
  assert.throws(() => dec(0n, 1n, ext), (e: unknown) => isVdiskError(e, 'ECORRUPT'));
  assert.throws(() => dec(0x70000n | 1n, 0n, ext), (e: unknown) => isVdiskError(e, 'ECORRUPT'));
});

test('writeL2Entry and readL2Entry round-trip in table buffers', () => {
  for (const g of [std, ext]) {
    const table = new Uint8Array(1 << 16);
    const maps: L2Mapping[] = [
      { kind: 'unallocated' },
      { kind: 'zero-plain' },
      { kind: 'zero-alloc', hostOffset: 0x90000, copied: true },
      { kind: 'normal', hostOffset: 0x1_0000_0000_0000, copied: false },
    ];
    if (g.extendedL2) maps.push({ kind: 'subclusters', hostOffset: 0xa0000, copied: true, allocMask: 0x80000001, zeroMask: 0x7ffffffe });
    maps.forEach((m, i) => writeL2Entry(table, i, m, g));
    maps.forEach((m, i) => assert.deepEqual(readL2Entry(table, i, { geometry: g, file: 'x', tableOffset: 0 }), m));
  }
});

test('L1 entries encode and decode the L2 offset and COPIED', () => {
  assert.deepEqual(decodeL1Entry(encodeL1Entry(0x40000, true), { clusterBits: 16, loc }), { l2Offset: 0x40000, copied: true });
  assert.equal(encodeL1Entry(0, true), 0n);
});

test('plainDataOffset takes exactly the entries decodeL2Entry maps as plain data, at the same host offset', () => {
  const half = (e: bigint): [number, number] => [Number(e >> 32n), Number(e & 0xffffffffn)];
  const entries = [
    0n,
    1n,
    0x50000n,
    0x50000n | COPIED,
    0x50000n | 1n,
    0x50000n | 1n | COPIED,
    0x50200n, // not cluster aligned
    0x50000n | 0x2n, // a reserved bit
    (1n << 62n) | 0x50000n, // compressed
    0xff_ffff_ffff_0000n, // past MAX_SAFE_INTEGER
  ];
  for (const e of entries) {
    let m: L2Mapping | null = null;
    try {
      m = dec(e);
    } catch {
      m = null;
    }
    const [hi, lo] = half(e);
    const expected = m?.kind === 'normal' && m.hostOffset !== 0 ? m.hostOffset : -1;
    assert.equal(plainDataOffset(hi, lo, std.clusterBits), expected, `entry 0x${e.toString(16)}`);
  }
});

test('an offset is cluster aligned for every cluster size exactly when the entry decodes (L2, extended L2, L1, and the plain-data path)', () => {
  for (const clusterBits of [9, 12, 16, 21]) {
    const cs = 1n << BigInt(clusterBits);
    // Offsets in the low word, in the high word, and with both: aligned ones, and ones off by a sector and by half a cluster.
    const bases = [cs, 5n * cs, 1n << 32n, (1n << 40n) + 3n * cs, (1n << 48n) + cs];
    for (const base of bases) {
      for (const off of [0n, 512n, cs / 2n, cs - 512n]) {
        // Bits below 9 are flags and reserved bits, not offset bits.
        if (off % 512n !== 0n) continue;
        const host = base + off;
        const aligned = host % cs === 0n;
        const what = `offset 0x${host.toString(16)}, cluster_bits ${clusterBits}`;
        const g: L2Geometry = { clusterBits, extendedL2: false, externalDataFile: false };
        const mapsTo = (f: () => unknown): boolean => {
          try {
            f();
            return true;
          } catch (e) {
            assert.ok(isVdiskError(e, 'ECORRUPT') && /not cluster aligned/.test(e.message), `${what}: ${String(e)}`);
            return false;
          }
        };
        assert.equal(mapsTo(() => dec(host, null, g)), aligned, `L2 ${what}`);
        if (clusterBits >= 14) assert.equal(mapsTo(() => dec(host, 0xffffffffn, { ...g, extendedL2: true })), aligned, `extended L2 ${what}`);
        assert.equal(mapsTo(() => decodeL1Entry(host, { clusterBits, loc })), aligned, `L1 ${what}`);
        assert.equal(plainDataOffset(Number(host >> 32n), Number(host & 0xffffffffn), clusterBits), aligned ? Number(host) : -1, `plain ${what}`);
      }
    }
  }
});
