import { test } from 'node:test';
import assert from 'node:assert/strict';
import { skipZeroUnits } from '../../../src/util/zeros.js';

/** The obvious answer, unit by unit. */
function slow(bytes: Buffer, from: number, to: number, unit: number): number {
  for (let pos = from; pos < to; pos += unit) {
    if (bytes.subarray(pos, pos + unit).some((b) => b !== 0)) return pos;
  }
  return to;
}

test('skipZeroUnits finds the first non-zero unit at every position, across block edges', () => {
  for (const unit of [8, 16]) {
    const size = 3 * 4096 + 512;
    for (const hit of [0, 1, 7, 8, 255, 256, 4095, 4096, 4100, 8191, 8192 + 300, size - 1]) {
      const b = Buffer.alloc(size);
      b[hit] = 0x40;
      for (const from of [0, unit, 4096 - unit, 4096 + 3 * unit]) {
        for (const to of [size, from + unit, Math.min(size, from + 4096), Math.min(size, from + 8192)]) {
          if (to <= from) continue;
          assert.equal(skipZeroUnits(b, from, to, unit), slow(b, from, to, unit), `unit ${unit} hit ${hit} [${from}, ${to})`);
        }
      }
    }
  }
});

test('skipZeroUnits returns the end for an all-zero range and works on a view with an offset', () => {
  const backing = Buffer.alloc(70000);
  const view = backing.subarray(1000, 1000 + 65536);
  assert.equal(skipZeroUnits(view, 0, 65536, 8), 65536);
  view[65535] = 1;
  assert.equal(skipZeroUnits(view, 8, 65536, 8), 65528);
});
