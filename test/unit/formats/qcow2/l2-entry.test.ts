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
  plainRunEnd,
  readL2Entry,
  CopiedEntryRun,
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

test('CopiedEntryRun stores what writeL2Entry stores for clusters one after another on the host, COPIED set, for every cluster size', () => {
  for (let bits = 9; bits <= 21; bits++) {
    const cs = 2 ** bits;
    // Starts just below each limb's carry, and near the top of the 56-bit offsets.
    for (const start of [cs, 2 ** 16 - cs, 2 ** 32 - 3 * cs, 2 ** 48 - 2 * cs, 2 ** 55 - 4 * cs]) {
      if (start <= 0 || start % cs !== 0) continue;
      const fast = new Uint8Array(8 * 8);
      const slow = new Uint8Array(8 * 8);
      const run = new CopiedEntryRun(start, bits);
      // Guest clusters 100.. of a table starting at 96 (slots 4..), not every slot: the bulk write leaves out clusters of zeros.
      const guest = new Int32Array([100, 101, 102, 103, 107, 96, 99]);
      // Stops at the first cluster of another table; the next call goes on from there on the host.
      assert.equal(run.storeRun(fast, 96, 8, guest, 0, 5), 4);
      assert.equal(run.storeRun(fast, 96, 4, guest, 5, 7), 7);
      const slots = [4, 5, 6, 7, 0, 3];
      slots.forEach((index, i) => writeL2Entry(slow, index, { kind: 'normal', hostOffset: start + i * cs, copied: true }, { ...std, clusterBits: bits }));
      assert.deepEqual(fast, slow, `cluster bits ${bits}, first offset 0x${start.toString(16)}`);
    }
  }
  const fast = new Uint8Array(16);
  new CopiedEntryRun(2 ** 32 - 0x10000, 16).storeRun(fast, 0, 2, new Int32Array([0, 1]), 0, 2);
  assert.equal(new DataView(fast.buffer).getBigUint64(8, false), (1n << 63n) | 2n ** 32n);
});

test('plainRunEnd ends a run exactly where the next entry stops continuing it on the host, for every cluster size', () => {
  /** The reference: entries decoded one by one. */
  const reference = (t: Uint8Array, first: number, end: number, bits: number): number => {
    const view = new DataView(t.buffer, t.byteOffset, t.byteLength);
    const start = plainDataOffset(view.getUint32(first * 8), view.getUint32(first * 8 + 4), bits);
    let i = first + 1;
    while (i < end && plainDataOffset(view.getUint32(i * 8), view.getUint32(i * 8 + 4), bits) === start + (i - first) * 2 ** bits) i++;
    return i;
  };
  let seed = 7;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let bits = 9; bits <= 21; bits++) {
    const cs = 2n ** BigInt(bits);
    // Host offsets near limb carries (2^16, 2^32, 2^48) and near the 2^53 limit.
    const starts = [cs, 2n ** 16n - 2n * cs, 2n ** 32n - 3n * cs, 2n ** 48n - cs, 2n ** 53n - 4n * cs];
    for (const start of starts) {
      for (let round = 0; round < 20; round++) {
        const n = 12;
        const t = new Uint8Array(n * 8);
        const view = new DataView(t.buffer);
        for (let i = 0; i < n; i++) {
          let e = start + BigInt(i) * cs;
          // Now and then an entry that breaks the run: a gap, a zero flag, compressed, unallocated, a reserved bit.
          const kind = rand(10);
          if (kind === 0) e += cs;
          else if (kind === 1) e |= 1n;
          else if (kind === 2) e |= 1n << 62n;
          else if (kind === 3) e = 0n;
          else if (kind === 4) e |= 1n << 57n;
          if (rand(2) === 0) e |= COPIED; // the flag never matters
          view.setBigUint64(i * 8, e);
        }
        for (let first = 0; first < n; first++) {
          if (plainDataOffset(view.getUint32(first * 8), view.getUint32(first * 8 + 4), bits) < 0) continue;
          for (const end of [first + 1, Math.min(n, first + 3), n]) {
            assert.equal(plainRunEnd(t, first, end, bits), reference(t, first, end, bits), `bits ${bits}, start ${start}, first ${first}, end ${end}`);
          }
        }
      }
    }
  }
});
