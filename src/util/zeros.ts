/**
 * Finding runs of zero bytes fast: whole blocks are compared natively
 * (memcmp against a zero block), and only a block that is not all zero is
 * looked into, first in smaller blocks, then unit by unit.
 */

/** Compared against, never written. */
const ZERO_BLOCK = Buffer.alloc(4096);
const BIG = ZERO_BLOCK.length;
const SMALL = 256;

function zeroBetween(bytes: Buffer, from: number, to: number): boolean {
  return bytes.compare(ZERO_BLOCK, 0, to - from, from, to) === 0;
}

/** Bytes looked at one by one before a range is compared natively: data nearly always shows a non-zero one. */
const PROBE = 16;

/** Whether `bytes[from, to)` holds only zeros, told for most data without a native call. */
export function isZeroRange(bytes: Buffer, from: number, to: number): boolean {
  const probeEnd = Math.min(to, from + PROBE);
  for (let i = from; i < probeEnd; i++) if (bytes[i] !== 0) return false;
  for (let i = probeEnd; i < to; i += BIG) {
    if (!zeroBetween(bytes, i, Math.min(to, i + BIG))) return false;
  }
  return true;
}

/** `bytes` as a Buffer over the same memory (no copy). */
export function bufferView(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The first offset in [from, to) of a `unit`-sized piece (pieces start at
 * `from` + k·unit) holding a non-zero byte, or `to` when all are zero.
 * `unit` must divide 256 (8 and 16 do: L2 entries), and `to - from` be a
 * multiple of it.
 *
 * @example
 * const b = Buffer.alloc(8192); b[5000] = 1;
 * skipZeroUnits(b, 0, 8192, 8); // 4992
 */
export function skipZeroUnits(bytes: Buffer, from: number, to: number, unit: number): number {
  let pos = from;
  while (pos < to) {
    // Blocks end on multiples of BIG (relative to `from`'s unit grid they stay aligned: BIG % unit === 0).
    const bigEnd = Math.min(to, pos + BIG - ((pos - from) % BIG));
    if (zeroBetween(bytes, pos, bigEnd)) {
      pos = bigEnd;
      continue;
    }
    while (pos < bigEnd) {
      const smallEnd = Math.min(bigEnd, pos + SMALL - ((pos - from) % SMALL));
      if (!zeroBetween(bytes, pos, smallEnd)) {
        for (; pos < smallEnd; pos += unit) {
          for (let i = pos; i < pos + unit; i++) if (bytes[i] !== 0) return pos;
        }
      }
      pos = smallEnd;
    }
  }
  return to;
}
