/**
 * Refcount block codec: entries of `1 << order` bits (order 0..6) packed into a
 * cluster, as QEMU's get_refcount_ro0..ro6 / set_refcount_ro0..ro6 lay them out.
 * Widths below 8 bits fill each byte from its least significant bit; widths of
 * 8 bits and more are big-endian words. Values are bigint only for width 64.
 */
import { VdiskError } from '../../errors.js';
import { beWord } from '../../util/be-word.js';
import { bufferView, skipZeroUnits } from '../../util/zeros.js';

/** Largest refcount an entry of `1 << order` bits holds. */
export function maxRefcount(order: number): bigint {
  return (1n << (1n << BigInt(order))) - 1n;
}

/** Entries in one refcount block: cluster_size * 8 / refcount_bits. */
export function refcountBlockEntries(clusterSize: number, order: number): number {
  return (clusterSize * 8) / 2 ** order;
}

function checkOrder(order: number): void {
  if (!Number.isInteger(order) || order < 0 || order > 6) {
    throw new VdiskError('EINVAL', `Invalid refcount order ${order}: must be between 0 and 6`, { field: 'refcount_order' });
  }
}

/** Reads entry `index` of a refcount block. Width-64 values above 2^53 saturate: use getRefcountBig for those. */
export function getRefcount(block: Uint8Array, index: number, order: number): number {
  // Hot in check and create: plain number arithmetic below 64 bits.
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const width = 1 << order;
      const perByte = 8 >> order;
      return ((block[(index / perByte) | 0] ?? 0) >> ((index % perByte) * width)) & ((1 << width) - 1);
    }
    case 3:
      return block[index] ?? 0;
    case 4:
      return ((block[index * 2] ?? 0) << 8) | (block[index * 2 + 1] ?? 0);
    case 5:
      return beWord(block, index * 4);
    default: {
      const value = getRefcountBig(block, index, order);
      return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
    }
  }
}

export function getRefcountBig(block: Uint8Array, index: number, order: number): bigint {
  checkOrder(order);
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const width = 2 ** order;
      const perByte = 8 / width;
      const byte = block[Math.floor(index / perByte)] ?? 0;
      return BigInt((byte >> ((index % perByte) * width)) & ((1 << width) - 1));
    }
    case 3:
      return BigInt(view.getUint8(index));
    case 4:
      return BigInt(view.getUint16(index * 2, false));
    case 5:
      return BigInt(view.getUint32(index * 4, false));
    default:
      return view.getBigUint64(index * 8, false);
  }
}

/** Writes entry `index`; refuses values that do not fit the width. */
export function setRefcount(block: Uint8Array, index: number, order: number, value: number | bigint): void {
  // The default width (16 bits) set from a number, inside the block: without the BigInt and the
  // DataView below, which an allocation of thousands of clusters made per cluster.
  if (order === 4 && typeof value === 'number' && value >= 0 && value <= 0xffff && Number.isInteger(value) && index >= 0 && index * 2 + 1 < block.length) {
    block[index * 2] = value >>> 8;
    block[index * 2 + 1] = value & 0xff;
    return;
  }
  checkOrder(order);
  const v = BigInt(value);
  if (v < 0n || v > maxRefcount(order)) {
    throw new VdiskError('ERANGE', `Refcount ${v} does not fit in ${2 ** order} bits`, { field: 'refcount' });
  }
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  switch (order) {
    case 0:
    case 1:
    case 2: {
      const width = 2 ** order;
      const perByte = 8 / width;
      const pos = Math.floor(index / perByte);
      const shift = (index % perByte) * width;
      const mask = ((1 << width) - 1) << shift;
      const old = view.getUint8(pos);
      view.setUint8(pos, (old & ~mask) | (Number(v) << shift));
      return;
    }
    case 3:
      view.setUint8(index, Number(v));
      return;
    case 4:
      view.setUint16(index * 2, Number(v), false);
      return;
    case 5:
      view.setUint32(index * 4, Number(v), false);
      return;
    default:
      view.setBigUint64(index * 8, v, false);
  }
}

/** Entries below which zeroRefcountsFrom reads one by one: a native compare costs more than a few reads. */
const NATIVE_SCAN_ENTRIES = 64;

/**
 * How many entries in a row from `from` (at most up to `end`) are zero. An
 * allocation scans its run's entries first, thousands of them in a convert
 * while V8 still interprets this code: entries of whole bytes are compared
 * natively, a block at a time (util/zeros.ts). A short range (a write
 * allocating one cluster) is read entry by entry: the Buffer view and the
 * compare's checks cost 2-3 µs, 16 ms over 100,000 sequential 4 KiB writes.
 */
export function zeroRefcountsFrom(block: Uint8Array, from: number, end: number, order: number): number {
  if (order < 3 || end - from < NATIVE_SCAN_ENTRIES) {
    let i = from;
    while (i < end && getRefcount(block, i, order) === 0) i++;
    return i - from;
  }
  const width = 1 << (order - 3);
  return (skipZeroUnits(bufferView(block), from * width, end * width, width) - from * width) / width;
}

/**
 * Adds `delta` (> 0) to entries from..end-1 while each stays at most `max`;
 * returns the index of the first entry it left alone (its value would pass
 * `max`), or `end`. A run of free entries (a fresh allocation) of whole bytes
 * is filled natively: the first entry set, then copied over the rest.
 */
export function addToRefcounts(block: Uint8Array, from: number, end: number, order: number, delta: number, max: number): number {
  if (order >= 3 && delta <= max && end > from && zeroRefcountsFrom(block, from, end, order) === end - from) {
    const width = 1 << (order - 3);
    setRefcount(block, from, order, delta);
    for (let done = 1; done < end - from; ) {
      const take = Math.min(done, end - from - done);
      block.copyWithin((from + done) * width, from * width, (from + take) * width);
      done += take;
    }
    return end;
  }
  for (let i = from; i < end; i++) {
    const value = getRefcount(block, i, order) + delta;
    if (value > max) return i;
    setRefcount(block, i, order, value);
  }
  return end;
}
