import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CopiedEntryRun, plainRunEnd } from '../../../../src/formats/qcow2/l2-entry-runs.js';
import { plainDataOffset, writeL2Entry, type L2Geometry } from '../../../../src/formats/qcow2/l2-entry.js';

const std: L2Geometry = { clusterBits: 16, extendedL2: false, externalDataFile: false };
const COPIED = 1n << 63n;

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
