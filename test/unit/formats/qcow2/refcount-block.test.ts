import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  addToRefcounts,
  getRefcount,
  getRefcountBig,
  maxRefcount,
  refcountBlockEntries,
  setRefcount,
  zeroRefcountsFrom,
} from '../../../../src/formats/qcow2/refcount-block.js';
import { isVdiskError } from '../../../../src/errors.js';

test('maxRefcount is 2^width - 1 for every order', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(maxRefcount), [1n, 3n, 15n, 255n, 65535n, 4294967295n, 18446744073709551615n]);
});

test('refcount block entries per cluster follow the width', () => {
  assert.equal(refcountBlockEntries(65536, 4), 32768);
  assert.equal(refcountBlockEntries(512, 0), 4096);
  assert.equal(refcountBlockEntries(512, 6), 64);
});

test('sub-byte widths pack from the least significant bit as QEMU does', () => {
  const b1 = new Uint8Array(2);
  setRefcount(b1, 0, 0, 1);
  setRefcount(b1, 3, 0, 1);
  setRefcount(b1, 9, 0, 1);
  assert.deepEqual([...b1], [0b1001, 0b10]);
  const b2 = new Uint8Array(1);
  setRefcount(b2, 1, 1, 3);
  setRefcount(b2, 3, 1, 2);
  assert.deepEqual([...b2], [0b10001100]);
  const b4 = new Uint8Array(1);
  setRefcount(b4, 0, 2, 0xa);
  setRefcount(b4, 1, 2, 0x5);
  assert.deepEqual([...b4], [0x5a]);
});

test('widths of 8 bits and more are big-endian words', () => {
  const b = new Uint8Array(16);
  setRefcount(b, 1, 3, 0xab);
  assert.equal(b[1], 0xab);
  b.fill(0);
  setRefcount(b, 1, 4, 0x1234);
  assert.deepEqual([...b.subarray(2, 4)], [0x12, 0x34]);
  b.fill(0);
  setRefcount(b, 1, 5, 0x12345678);
  assert.deepEqual([...b.subarray(4, 8)], [0x12, 0x34, 0x56, 0x78]);
  b.fill(0);
  setRefcount(b, 1, 6, 0x0102030405060708n);
  assert.deepEqual([...b.subarray(8, 16)], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(getRefcountBig(b, 1, 6), 0x0102030405060708n);
});

test('every width round-trips values at every index without disturbing neighbours', () => {
  for (let order = 0; order <= 6; order++) {
    const block = new Uint8Array(64);
    const n = refcountBlockEntries(64, order);
    const max = maxRefcount(order);
    const value = (i: number): bigint => BigInt(i * 7 + 3) % (max + 1n);
    for (let i = 0; i < n; i++) setRefcount(block, i, order, value(i));
    for (let i = 0; i < n; i++) assert.equal(getRefcountBig(block, i, order), value(i), `order ${order} index ${i}`);
    setRefcount(block, 0, order, max);
    assert.equal(getRefcountBig(block, 0, order), max);
    if (n > 1) assert.equal(getRefcountBig(block, 1, order), value(1));
    assert.equal(getRefcount(block, 1, order), Number(value(1)));
  }
});

test('values that do not fit the width are refused', () => {
  assert.throws(() => setRefcount(new Uint8Array(1), 0, 0, 2), (e) => isVdiskError(e, 'ERANGE'));
  assert.throws(() => setRefcount(new Uint8Array(2), 0, 4, 65536), (e) => isVdiskError(e, 'ERANGE'));
  assert.throws(() => getRefcount(new Uint8Array(2), 0, 7), (e) => isVdiskError(e, 'EINVAL'));
});

test('16-bit refcounts set from numbers (the fast path) match those set from BigInts, and stay inside the block', () => {
  const fromNumbers = new Uint8Array(64);
  const fromBigInts = new Uint8Array(64);
  for (let i = 0; i < 32; i++) {
    const v = (i * 2749 + 1) % 65536;
    setRefcount(fromNumbers, i, 4, v);
    setRefcount(fromBigInts, i, 4, BigInt(v));
  }
  assert.deepEqual(fromNumbers, fromBigInts);
  assert.equal(getRefcount(fromNumbers, 31, 4), (31 * 2749 + 1) % 65536);
  // Past the block's end, a fraction, a negative value: refused as before, nothing written.
  assert.throws(() => setRefcount(fromNumbers, 32, 4, 1), RangeError);
  assert.throws(() => setRefcount(fromNumbers, 0, 4, 1.5), RangeError);
  assert.throws(() => setRefcount(fromNumbers, 0, 4, -1), (e) => isVdiskError(e, 'ERANGE'));
  assert.deepEqual(fromNumbers, fromBigInts);
});

test('zeroRefcountsFrom and addToRefcounts agree with entry-by-entry reads and writes for every width', () => {
  for (let order = 0; order <= 6; order++) {
    const entries = refcountBlockEntries(512, order);
    const max = order === 6 ? Number.MAX_SAFE_INTEGER : Number(maxRefcount(order));
    const block = new Uint8Array(512);
    // Free runs of several lengths between used entries, one of them at its width's top.
    const used = [3, 4, 9, entries - 2].filter((i) => i < entries);
    used.forEach((i, n) => setRefcount(block, i, order, n === 1 ? max : 1));
    const zerosByEntry = (from: number, end: number): number => {
      let i = from;
      while (i < end && getRefcount(block, i, order) === 0) i++;
      return i - from;
    };
    for (let from = 0; from < entries; from++) {
      for (const end of [from, from + 1, from + 5, entries]) {
        const e = Math.min(end, entries);
        assert.equal(zeroRefcountsFrom(block, from, e, order), zerosByEntry(from, e), `order ${order}, ${from}..${e}`);
      }
    }
    // Adds up to the entry that would pass the maximum, and leaves it and the rest alone.
    const before = Array.from({ length: entries }, (_, i) => getRefcount(block, i, order));
    const full = before.findIndex((v) => v + 1 > max);
    assert.equal(full, order === 0 ? 3 : 4);
    assert.equal(addToRefcounts(block, 0, entries, order, 1, max), full, `order ${order}`);
    for (let i = 0; i < entries; i++) assert.equal(getRefcount(block, i, order), before[i]! + (i < full ? 1 : 0), `order ${order}, entry ${i}`);
    assert.equal(addToRefcounts(block, 5, entries, order, 1, max), order === 0 ? 9 : entries);
    // A free run (a fresh allocation) becomes 1s, nothing around it changes.
    for (const [from, end] of [[1, entries - 1], [0, 1], [2, 3], [5, Math.min(entries, 37)]] as const) {
      const fresh = new Uint8Array(512);
      assert.equal(addToRefcounts(fresh, from, end, order, 1, max), end);
      for (let i = 0; i < entries; i++) assert.equal(getRefcount(fresh, i, order), i >= from && i < end ? 1 : 0, `order ${order}, run ${from}..${end}, entry ${i}`);
    }
  }
});
