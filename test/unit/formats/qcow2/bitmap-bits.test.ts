import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bitmapBytes, markRange, resizeBits } from '../../../../src/formats/qcow2/bitmap-bits.js';

/** The granules whose bit is set, in order. */
function setGranules(bits: Uint8Array): number[] {
  const out: number[] = [];
  bits.forEach((b, i) => {
    for (let k = 0; k < 8; k++) if (b & (1 << k)) out.push(i * 8 + k);
  });
  return out;
}

test('a range marks every granule it touches, partial ones included', () => {
  const bits = new Uint8Array(bitmapBytes(64 * 65536, 65536));
  assert.equal(bits.length, 8);
  assert.equal(markRange(bits, 65536, 65536 - 1, 2), true);
  assert.deepEqual(setGranules(bits), [0, 1]);
  markRange(bits, 65536, 5 * 65536, 20 * 65536);
  assert.deepEqual(setGranules(bits), [0, 1, ...Array.from({ length: 20 }, (_, i) => 5 + i)]);
  assert.deepEqual([...bits.subarray(1, 3)], [0xff, 0xff]);
  markRange(bits, 65536, 63 * 65536, 65536);
  assert.equal(bits[7], 0x80);
});

test('an empty range marks nothing', () => {
  const bits = new Uint8Array(2);
  assert.equal(markRange(bits, 512, 100, 0), false);
  assert.deepEqual([...bits], [0, 0]);
});

test('resizing keeps the bits of the granules that stay and clears the rest', () => {
  const bits = new Uint8Array(bitmapBytes(16 * 4096, 4096)).fill(0xff);
  const shrunk = resizeBits(bits, 4096, 5 * 4096 + 1);
  assert.deepEqual(setGranules(shrunk), [0, 1, 2, 3, 4, 5]);
  const grown = resizeBits(shrunk, 4096, 64 * 4096);
  assert.equal(grown.length, 8);
  assert.deepEqual(setGranules(grown), [0, 1, 2, 3, 4, 5]);
});
