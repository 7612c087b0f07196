/**
 * L1 and L2 entries: raw on-disk bits become a meaning here, once
 * (qcow2.txt "Cluster mapping"; FACTS.md 1.6–1.9). Everything above this module
 * switches on `L2Mapping.kind` and never looks at flag bits again, but for
 * l2-entry-runs.ts, which compares and writes runs of plain data entries in
 * 16-bit limbs for the hot loops of block status and the bulk write.
 *
 * Entries are decoded from two 32-bit halves instead of a bigint in the hot
 * path (an L2 table holds up to 262144 entries); the bigint forms exist for
 * callers that hold a single entry (check, tests).
 */
import { VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import { beWord } from '../../util/be-word.js';

/** Geometry an entry is decoded against. */
export interface L2Geometry {
  readonly clusterBits: number;
  readonly extendedL2: boolean;
  readonly externalDataFile: boolean;
}

/** Where an entry lives, for error messages. */
export interface L2Location {
  readonly file: string;
  /** Host offset of the L2 table (or L1 table for L1 entries). */
  readonly tableOffset: number;
  readonly index: number;
}

/** Number of subclusters of an extended-L2 cluster. */
export const SUBCLUSTERS = 32;
/** All 32 subcluster bits of one bitmap half. */
export const ALL_SUBCLUSTERS = 0xffffffff;

/**
 * The meaning of one L2 entry (plus its subcluster bitmap with extended L2).
 * With extended L2, an entry whose 32 subclusters all agree collapses to the
 * plain kinds; `subclusters` is used only when they differ (or when a host
 * cluster is present but no subcluster is allocated nor zero).
 */
export type L2Mapping =
  | { readonly kind: 'unallocated' }
  | { readonly kind: 'zero-plain' }
  | { readonly kind: 'zero-alloc'; readonly hostOffset: number; readonly copied: boolean }
  | { readonly kind: 'normal'; readonly hostOffset: number; readonly copied: boolean }
  | {
      readonly kind: 'compressed';
      /** Byte offset of the compressed data (not aligned in general). */
      readonly hostOffset: number;
      /** Bytes to read from hostOffset, as QEMU computes it: sectors*512 - hostOffset%512. */
      readonly sizeBytes: number;
      /** 512-byte sectors touched, counted from the sector holding hostOffset. */
      readonly sectors: number;
    }
  | {
      readonly kind: 'subclusters';
      /** Host cluster, or null when the entry has no host cluster (only zero/unallocated subclusters). */
      readonly hostOffset: number | null;
      readonly copied: boolean;
      /** Bit i set: subcluster i holds data in the host cluster. */
      readonly allocMask: number;
      /** Bit i set: subcluster i reads as zeros. */
      readonly zeroMask: number;
    };

/** What one subcluster (or a whole cluster without subclusters) reads as. */
export type SubclusterState = 'unallocated' | 'zero' | 'data' | 'compressed';

const TWO32 = 0x1_0000_0000;
// Bits 56–62 of the high word of an L1 entry, and 1–8 of the low word (L1E_RESERVED_MASK).
const L1_RESERVED_HI = 0x7f000000;
const L1_RESERVED_LO = 0x000001ff;
// L2E_STD_RESERVED_MASK = 0x3f000000000001fe.
const L2_RESERVED_HI = 0x3f000000;
const L2_RESERVED_LO = 0x000001fe;
const COPIED_HI = 0x80000000;
const COMPRESSED_HI = 0x40000000;
const OFFSET_HI = 0x00ffffff;
const OFFSET_LO = 0xfffffe00;

function corrupt(loc: L2Location, what: string, message: string): VdiskError {
  return new VdiskError(
    'ECORRUPT',
    `'${loc.file}': ${what} at ${hex(loc.tableOffset)} index ${loc.index}: ${message}`,
    { file: loc.file, offset: loc.tableOffset + loc.index * 8, field: what },
  );
}

function offsetOf(hi: number, lo: number): number {
  return (hi & OFFSET_HI) * TWO32 + ((lo & OFFSET_LO) >>> 0);
}

/**
 * The offset an entry's words hold is cluster aligned: cluster_bits is 9 to 21
 * (the header refuses others), so the low word decides, with no `2 **` (a call
 * into the math library for every entry decoded).
 */
function clusterAligned(lo: number, clusterBits: number): boolean {
  return (lo & OFFSET_LO & ((1 << clusterBits) - 1)) === 0;
}

function rawHex(hi: number, lo: number): string {
  return `0x${(hi >>> 0).toString(16).padStart(8, '0')}${(lo >>> 0).toString(16).padStart(8, '0')}`;
}

export interface L1Mapping {
  /** Host offset of the L2 table, 0 when the range is unallocated. */
  readonly l2Offset: number;
  readonly copied: boolean;
}

/** Decodes an L1 entry given as its two big-endian 32-bit halves. */
export function decodeL1Words(hi: number, lo: number, ctx: { readonly clusterBits: number; readonly loc: L2Location }): L1Mapping {
  if ((hi & L1_RESERVED_HI) !== 0 || (lo & L1_RESERVED_LO) !== 0) {
    throw corrupt(ctx.loc, 'L1 table', `entry ${rawHex(hi, lo)} has reserved bits set`);
  }
  const l2Offset = offsetOf(hi, lo);
  if (!clusterAligned(lo, ctx.clusterBits)) {
    throw corrupt(ctx.loc, 'L1 table', `L2 table offset ${hex(l2Offset)} is not cluster aligned`);
  }
  return { l2Offset, copied: (hi & COPIED_HI) !== 0 && l2Offset !== 0 };
}

/** Decodes an L1 entry (bigint form). */
export function decodeL1Entry(entry: bigint, ctx: { readonly clusterBits: number; readonly loc: L2Location }): L1Mapping {
  return decodeL1Words(Number(entry >> 32n) >>> 0, Number(entry & 0xffffffffn) >>> 0, ctx);
}

/** Encodes an L1 entry: the L2 table offset, COPIED when its refcount is exactly 1. */
export function encodeL1Entry(l2Offset: number, copied: boolean): bigint {
  if (l2Offset === 0) return 0n;
  return BigInt(l2Offset) | (copied ? 1n << 63n : 0n);
}

/** Reads L1 entry `index` of an L1 table buffer. */
export function readL1Entry(table: Uint8Array, index: number, ctx: { readonly clusterBits: number; readonly file: string; readonly tableOffset: number }): L1Mapping {
  return readL1EntryOf(table, index, ctx.clusterBits, ctx.file, ctx.tableOffset);
}

/**
 * readL1Entry with its context as arguments: every request looks up an L1
 * entry, and a valid one costs no object but its result (the error's context
 * objects are made only for a corrupt entry).
 */
export function readL1EntryOf(table: Uint8Array, index: number, clusterBits: number, file: string, tableOffset: number): L1Mapping {
  const at = index * 8;
  const hi = beWord(table, at);
  const lo = beWord(table, at + 4);
  if (hi === 0 && lo === 0) return UNALLOCATED_L1;
  if ((hi & L1_RESERVED_HI) === 0 && (lo & L1_RESERVED_LO) === 0) {
    const l2Offset = offsetOf(hi, lo);
    if (clusterAligned(lo, clusterBits)) return { l2Offset, copied: (hi & COPIED_HI) !== 0 && l2Offset !== 0 };
  }
  return decodeL1Words(hi, lo, { clusterBits, loc: { file, tableOffset, index } });
}

/** Writes L1 entry `index` of an L1 table buffer. */
export function writeL1Entry(table: Uint8Array, index: number, l2Offset: number, copied: boolean): void {
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  view.setBigUint64(index * 8, encodeL1Entry(l2Offset, copied), false);
}

const UNALLOCATED_L1: L1Mapping = Object.freeze({ l2Offset: 0, copied: false });
const UNALLOCATED: L2Mapping = Object.freeze({ kind: 'unallocated' });
const ZERO_PLAIN: L2Mapping = Object.freeze({ kind: 'zero-plain' });

/** The `x` of FACTS.md 1.8: first bit of the compressed sector count (QEMU csize_shift). */
export function compressedShift(clusterBits: number): number {
  return 70 - clusterBits;
}

/**
 * Decodes an L2 entry from its 32-bit halves and (extended L2) the two halves of
 * its bitmap. Throws ECORRUPT for reserved bits, misaligned offsets and invalid
 * subcluster combinations.
 */
export function decodeL2Words(
  words: { readonly hi: number; readonly lo: number; readonly bitmapHi: number; readonly bitmapLo: number },
  geometry: L2Geometry,
  loc: L2Location,
): L2Mapping {
  return decodeWords(words.hi, words.lo, words.bitmapHi, words.bitmapLo, geometry, loc.file, loc.tableOffset, loc.index);
}

/**
 * decodeL2Words on loose words and the entry's place, which becomes an object
 * only in an error: a guest request decodes an entry or two, and the two
 * objects per entry were a share of what a depth-1 overwrite allocated.
 */
/** An L2 entry's corruption error, its place made into an object only now. */
function l2Corrupt(file: string, tableOffset: number, index: number, message: string): VdiskError {
  return corrupt({ file, tableOffset, index }, 'L2 table', message);
}

function decodeWords(hi: number, lo: number, bitmapHi: number, bitmapLo: number, geometry: L2Geometry, file: string, tableOffset: number, index: number): L2Mapping {
  if ((hi & COMPRESSED_HI) !== 0) {
    if (geometry.externalDataFile) throw l2Corrupt(file, tableOffset, index, `compressed entry ${rawHex(hi, lo)} in an image with an external data file`);
    if ((hi & COPIED_HI) !== 0) throw l2Corrupt(file, tableOffset, index, `compressed entry ${rawHex(hi, lo)} has the COPIED flag set`);
    if (geometry.extendedL2 && (bitmapHi !== 0 || bitmapLo !== 0)) {
      throw l2Corrupt(file, tableOffset, index, `compressed entry has a non-zero subcluster bitmap ${rawHex(bitmapHi, bitmapLo)}`);
    }
    return decodeCompressedWords(hi, lo, geometry.clusterBits);
  }
  if ((hi & L2_RESERVED_HI) !== 0 || (lo & L2_RESERVED_LO) !== 0) {
    throw l2Corrupt(file, tableOffset, index, `entry ${rawHex(hi, lo)} has reserved bits set`);
  }
  const hostOffset = offsetOf(hi, lo);
  const copied = (hi & COPIED_HI) !== 0;
  if (!clusterAligned(lo, geometry.clusterBits)) {
    throw l2Corrupt(file, tableOffset, index, `cluster offset ${hex(hostOffset)} is not cluster aligned`);
  }
  if (hostOffset > Number.MAX_SAFE_INTEGER) {
    throw l2Corrupt(file, tableOffset, index, `cluster offset ${hex(hostOffset)} is out of range`);
  }
  // With an external data file offset 0 is a valid host offset; COPIED tells it apart.
  const hasHost = hostOffset !== 0 || (geometry.externalDataFile && copied);
  if (!geometry.extendedL2) {
    if ((lo & 1) !== 0) return hasHost ? { kind: 'zero-alloc', hostOffset, copied } : ZERO_PLAIN;
    return hasHost ? { kind: 'normal', hostOffset, copied } : UNALLOCATED;
  }
  if ((lo & 1) !== 0) throw l2Corrupt(file, tableOffset, index, `entry ${rawHex(hi, lo)} has the zero flag set in an extended L2 table`);
  const allocMask = bitmapLo >>> 0;
  const zeroMask = bitmapHi >>> 0;
  if ((allocMask & zeroMask) !== 0) {
    throw l2Corrupt(file, tableOffset, index, `subcluster bitmap ${rawHex(bitmapHi, bitmapLo)} marks subclusters both allocated and zero`);
  }
  if (!hasHost) {
    if (allocMask !== 0) throw l2Corrupt(file, tableOffset, index, `subcluster bitmap ${rawHex(bitmapHi, bitmapLo)} marks subclusters allocated but the entry has no host cluster`);
    if (zeroMask === 0) return UNALLOCATED;
    if (zeroMask === ALL_SUBCLUSTERS) return ZERO_PLAIN;
    return { kind: 'subclusters', hostOffset: null, copied: false, allocMask, zeroMask };
  }
  if (allocMask === ALL_SUBCLUSTERS) return { kind: 'normal', hostOffset, copied };
  if (zeroMask === ALL_SUBCLUSTERS) return { kind: 'zero-alloc', hostOffset, copied };
  return { kind: 'subclusters', hostOffset, copied, allocMask, zeroMask };
}

function decodeCompressedWords(hi: number, lo: number, clusterBits: number): L2Mapping {
  const x = compressedShift(clusterBits);
  const hiOffsetBits = x - 32;
  const hostOffset = (hi & ((1 << hiOffsetBits) - 1)) * TWO32 + (lo >>> 0);
  const csizeMask = (1 << (clusterBits - 8)) - 1;
  const sectors = ((hi >>> hiOffsetBits) & csizeMask) + 1;
  return { kind: 'compressed', hostOffset, sizeBytes: sectors * 512 - (hostOffset % 512), sectors };
}

/**
 * The host offset of a standard (not extended) L2 entry that maps a plain data
 * cluster: allocated, not compressed, no zero flag, no reserved bits, aligned,
 * in range and not 0. -1 for every other entry, which `decodeL2Words` then
 * decodes and checks. Reading a whole disk maps every cluster: this path
 * creates no object per entry.
 */
export function plainDataOffset(hi: number, lo: number, clusterBits: number): number {
  if ((hi & (COMPRESSED_HI | L2_RESERVED_HI)) !== 0 || (lo & (L2_RESERVED_LO | 1)) !== 0) return -1;
  const host = offsetOf(hi, lo);
  if (host === 0 || host > Number.MAX_SAFE_INTEGER || !clusterAligned(lo, clusterBits)) return -1;
  return host;
}

/**
 * Decodes an L2 entry. `bitmap` is the second word of an extended L2 entry
 * (null for standard entries).
 */
export function decodeL2Entry(entry: bigint, bitmap: bigint | null, ctx: { readonly geometry: L2Geometry; readonly loc: L2Location }): L2Mapping {
  const b = bitmap ?? 0n;
  return decodeL2Words(
    { hi: Number(entry >> 32n) >>> 0, lo: Number(entry & 0xffffffffn) >>> 0, bitmapHi: Number(b >> 32n) >>> 0, bitmapLo: Number(b & 0xffffffffn) >>> 0 },
    ctx.geometry,
    ctx.loc,
  );
}

/** Bytes of one L2 entry: 8, or 16 with extended L2. */
export function l2EntrySize(geometry: { readonly extendedL2: boolean }): number {
  return geometry.extendedL2 ? 16 : 8;
}

/** Reads and decodes entry `index` of an L2 table buffer. */
export function readL2Entry(table: Uint8Array, index: number, ctx: { readonly geometry: L2Geometry; readonly file: string; readonly tableOffset: number }): L2Mapping {
  const pos = index * l2EntrySize(ctx.geometry);
  const hi = beWord(table, pos);
  const lo = beWord(table, pos + 4);
  let bitmapHi = 0;
  let bitmapLo = 0;
  if (ctx.geometry.extendedL2) {
    bitmapHi = beWord(table, pos + 8);
    bitmapLo = beWord(table, pos + 12);
  }
  if ((hi | lo | bitmapHi | bitmapLo) === 0) return UNALLOCATED;
  return decodeWords(hi, lo, bitmapHi, bitmapLo, ctx.geometry, ctx.file, ctx.tableOffset, index);
}

/** The raw words of an entry: `entry` and (extended L2) `bitmap`, 0n otherwise. */
export interface L2Raw {
  readonly entry: bigint;
  readonly bitmap: bigint;
}

/** Encodes a mapping back to its raw entry (and bitmap for extended L2). */
export function encodeL2Entry(mapping: L2Mapping, geometry: L2Geometry): L2Raw {
  const copiedBit = (c: boolean): bigint => (c ? 1n << 63n : 0n);
  const ext = geometry.extendedL2;
  const allZero = BigInt(ALL_SUBCLUSTERS) << 32n;
  switch (mapping.kind) {
    case 'unallocated':
      return { entry: 0n, bitmap: 0n };
    case 'zero-plain':
      return ext ? { entry: 0n, bitmap: allZero } : { entry: 1n, bitmap: 0n };
    case 'zero-alloc':
      return ext
        ? { entry: BigInt(mapping.hostOffset) | copiedBit(mapping.copied), bitmap: allZero }
        : { entry: BigInt(mapping.hostOffset) | copiedBit(mapping.copied) | 1n, bitmap: 0n };
    case 'normal':
      return { entry: BigInt(mapping.hostOffset) | copiedBit(mapping.copied), bitmap: ext ? BigInt(ALL_SUBCLUSTERS) : 0n };
    case 'compressed':
      return { entry: encodeCompressedEntry(mapping.hostOffset, mapping.sizeBytes, geometry.clusterBits), bitmap: 0n };
    case 'subclusters':
      return {
        entry: mapping.hostOffset === null ? 0n : BigInt(mapping.hostOffset) | copiedBit(mapping.copied),
        bitmap: (BigInt(mapping.zeroMask >>> 0) << 32n) | BigInt(mapping.allocMask >>> 0),
      };
  }
}

/** Encodes and stores a mapping as entry `index` of an L2 table buffer. */
export function writeL2Entry(table: Uint8Array, index: number, mapping: L2Mapping, geometry: L2Geometry): void {
  const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
  const raw = encodeL2Entry(mapping, geometry);
  const pos = index * l2EntrySize(geometry);
  view.setBigUint64(pos, raw.entry, false);
  if (geometry.extendedL2) view.setBigUint64(pos + 8, raw.bitmap, false);
}

/**
 * The compressed-cluster descriptor as QEMU writes it (FACTS.md 1.8):
 * `coffset | (nb_csectors << x) | 1<<62`, where nb_csectors counts the sectors
 * after the one holding coffset.
 */
export function encodeCompressedEntry(coffset: number, length: number, clusterBits: number): bigint {
  const x = compressedShift(clusterBits);
  if (length <= 0) throw new VdiskError('EINVAL', `compressed length ${length} must be positive`);
  const nb = Math.floor((coffset + length - 1) / 512) - Math.floor(coffset / 512);
  if (nb > (1 << (clusterBits - 8)) - 1) {
    throw new VdiskError('EINVAL', `compressed cluster of ${length} bytes at ${hex(coffset)} does not fit the descriptor`);
  }
  if (coffset >= 2 ** Math.min(x, 56)) throw new VdiskError('EFBIG', `compressed data offset ${hex(coffset)} is out of range`);
  return BigInt(coffset) | (BigInt(nb) << BigInt(x)) | (1n << 62n);
}

/** The sector-aligned host range a compressed cluster's refcounts cover: [start, start+length). */
export function compressedRefRange(m: { readonly hostOffset: number; readonly sectors: number }): { start: number; length: number } {
  const start = m.hostOffset - (m.hostOffset % 512);
  return { start, length: m.sectors * 512 };
}

/** The host cluster an entry keeps referenced (refcounted), if any; compressed entries are ranges. */
export function referencedCluster(m: L2Mapping): number | null {
  switch (m.kind) {
    case 'normal':
    case 'zero-alloc':
      return m.hostOffset;
    case 'subclusters':
      return m.hostOffset;
    default:
      return null;
  }
}

/** What subcluster `i` (0..31) of a mapping reads as. Without extended L2, pass 0. */
export function subclusterState(m: L2Mapping, i: number): SubclusterState {
  switch (m.kind) {
    case 'unallocated':
      return 'unallocated';
    case 'zero-plain':
    case 'zero-alloc':
      return 'zero';
    case 'normal':
      return 'data';
    case 'compressed':
      return 'compressed';
    case 'subclusters': {
      const bit = (1 << i) >>> 0;
      if ((m.zeroMask & bit) !== 0) return 'zero';
      if ((m.allocMask & bit) !== 0) return 'data';
      return 'unallocated';
    }
  }
}
