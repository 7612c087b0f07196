/**
 * The bits of a persistent dirty bitmap in memory, laid out as on disk
 * (qcow2.txt "Bitmaps": one bit per granule, least significant bit first in
 * each byte, unused bits past the end of the disk zero). Pure helpers; the
 * tracking state lives in bitmap-ops.ts.
 */

/** Bytes holding one bit per `granularity` bytes of a `size`-byte disk. */
export function bitmapBytes(size: number, granularity: number): number {
  return Math.ceil(Math.ceil(size / granularity) / 8);
}

function setBit(bits: Uint8Array, granule: number): void {
  const at = Math.floor(granule / 8);
  bits[at] = (bits[at] ?? 0) | (1 << granule % 8);
}

/**
 * Sets the bits of every granule that [offset, offset + length) touches.
 * Returns false when the range is empty.
 *
 * @example
 * const bits = new Uint8Array(bitmapBytes(1 << 20, 65536));
 * markRange(bits, 65536, 65536, 1); // bits[0] === 0b10
 */
export function markRange(bits: Uint8Array, granularity: number, offset: number, length: number): boolean {
  if (length <= 0) return false;
  const first = Math.floor(offset / granularity);
  const last = Math.min(Math.floor((offset + length - 1) / granularity), bits.length * 8 - 1);
  let g = first;
  for (; g <= last && g % 8 !== 0; g++) setBit(bits, g);
  const wholeBytesEnd = Math.floor((last + 1) / 8);
  if (g / 8 < wholeBytesEnd) {
    bits.fill(0xff, g / 8, wholeBytesEnd);
    g = wholeBytesEnd * 8;
  }
  for (; g <= last; g++) setBit(bits, g);
  return true;
}

/**
 * The bits for the disk at its new size: granules that stay keep their bit,
 * new granules are clean, bits past the new end are cleared.
 */
export function resizeBits(bits: Uint8Array, granularity: number, newSize: number): Uint8Array {
  const granules = Math.ceil(newSize / granularity);
  const out = new Uint8Array(bitmapBytes(newSize, granularity));
  out.set(bits.subarray(0, out.length));
  const tail = granules % 8;
  if (tail !== 0 && out.length > 0) out[out.length - 1] = (out[out.length - 1] ?? 0) & ((1 << tail) - 1);
  return out;
}
