/**
 * Persistent dirty bitmaps (qcow2.txt "Bitmaps"): the bitmap directory the
 * bitmaps extension points to, and each bitmap's table of data clusters.
 * vdisk reads them so that check and info account for their clusters.
 */
import { VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import type { BitmapsExtension } from './extensions.js';
import { decodeName } from './extensions.js';

export const BITMAP_FLAG_IN_USE = 1 << 0;
export const BITMAP_FLAG_AUTO = 1 << 1;
export const BITMAP_FLAG_EXTRA_DATA_COMPATIBLE = 1 << 2;
const KNOWN_FLAGS = 0x7;
const DIRECTORY_ENTRY_FIXED = 24;
/** QEMU limits (qcow2-bitmap.c). */
export const MAX_BITMAP_NAME = 1023;
export const MIN_GRANULARITY_BITS = 9;
export const MAX_GRANULARITY_BITS = 31;
const TABLE_OFFSET_MASK = 0x00fffffffffffe00n;
const TABLE_RESERVED_MASK = 0xff000000000001fen;

export interface Qcow2Bitmap {
  readonly name: string;
  readonly tableOffset: number;
  /** Entries (u64) of the bitmap table. */
  readonly tableSize: number;
  readonly flags: number;
  readonly type: number;
  readonly granularityBits: number;
  readonly extraData: Uint8Array;
}

function corrupt(file: string, message: string, offset: number, field: string): VdiskError {
  return new VdiskError('ECORRUPT', `Cannot open '${file}': ${message}`, { file, offset, field });
}

/**
 * Parses the bitmap directory (`dir` holds ext.directorySize bytes read from
 * ext.directoryOffset) with QEMU's checks: entries inside the directory, names
 * present and unique, tables aligned and inside the file, known type and flags.
 */
export function parseBitmapDirectory(dir: Uint8Array, ctx: { file: string; ext: BitmapsExtension; clusterSize: number; fileSize: number }): Qcow2Bitmap[] {
  const { file, ext } = ctx;
  if (dir.length < ext.directorySize) throw corrupt(file, `bitmap directory at ${hex(ext.directoryOffset)} is truncated`, ext.directoryOffset, 'bitmap_directory_size');
  if (ext.directoryOffset + ext.directorySize > ctx.fileSize) {
    throw corrupt(file, `bitmap directory at ${hex(ext.directoryOffset)} extends past end of file (size ${hex(ctx.fileSize)})`, ext.directoryOffset, 'bitmap_directory_offset');
  }
  const view = new DataView(dir.buffer, dir.byteOffset, dir.byteLength);
  const out: Qcow2Bitmap[] = [];
  const names = new Set<string>();
  let pos = 0;
  for (let i = 0; i < ext.nbBitmaps; i++) {
    const at = ext.directoryOffset + pos;
    if (pos + DIRECTORY_ENTRY_FIXED > ext.directorySize) throw corrupt(file, `bitmap directory entry ${i} at ${hex(at)} overruns the directory`, at, 'bitmap_directory_size');
    const tableOffset = view.getBigUint64(pos, false);
    const tableSize = view.getUint32(pos + 8, false);
    const flags = view.getUint32(pos + 12, false);
    const type = view.getUint8(pos + 16);
    const granularityBits = view.getUint8(pos + 17);
    const nameSize = view.getUint16(pos + 18, false);
    const extraSize = view.getUint32(pos + 20, false);
    const end = pos + DIRECTORY_ENTRY_FIXED + extraSize + nameSize;
    if (end > ext.directorySize) throw corrupt(file, `bitmap directory entry ${i} at ${hex(at)} overruns the directory`, at, 'bitmap_directory_size');
    const name = decodeName(dir.subarray(pos + DIRECTORY_ENTRY_FIXED + extraSize, end));
    const where = `bitmap '${name}' (directory entry at ${hex(at)})`;
    if (nameSize === 0 || nameSize > MAX_BITMAP_NAME) throw corrupt(file, `${where} has an invalid name length ${nameSize}`, at + 18, 'name_size');
    if (names.has(name)) throw corrupt(file, `${where}: duplicate bitmap name`, at, 'name');
    names.add(name);
    if (type !== 1) throw corrupt(file, `${where} has unknown type ${type}`, at + 16, 'type');
    if ((flags & ~KNOWN_FLAGS) !== 0) throw corrupt(file, `${where} has reserved flags set (${hex(flags)})`, at + 12, 'flags');
    if (granularityBits < MIN_GRANULARITY_BITS || granularityBits > MAX_GRANULARITY_BITS) {
      throw corrupt(file, `${where} has unsupported granularity bits ${granularityBits} (9 to 31)`, at + 17, 'granularity_bits');
    }
    if (tableOffset % BigInt(ctx.clusterSize) !== 0n) {
      throw corrupt(file, `${where}: bitmap table offset ${hex(tableOffset)} is not aligned to the cluster size ${hex(ctx.clusterSize)}`, at, 'bitmap_table_offset');
    }
    if (tableOffset + BigInt(tableSize) * 8n > BigInt(ctx.fileSize)) {
      throw corrupt(file, `${where}: bitmap table at ${hex(tableOffset)} extends past end of file (size ${hex(ctx.fileSize)})`, at, 'bitmap_table_offset');
    }
    out.push({
      name,
      tableOffset: Number(tableOffset),
      tableSize,
      flags,
      type,
      granularityBits,
      extraData: dir.slice(pos + DIRECTORY_ENTRY_FIXED, pos + DIRECTORY_ENTRY_FIXED + extraSize),
    });
    pos = Math.ceil(end / 8) * 8;
  }
  return out;
}

export type BitmapTableEntry =
  | { readonly kind: 'zeros' }
  | { readonly kind: 'ones' }
  | { readonly kind: 'data'; readonly offset: number }
  | { readonly kind: 'invalid'; readonly raw: bigint };

/** Decodes one bitmap table entry; reserved bits or a misaligned offset make it invalid. */
export function decodeBitmapTableEntry(raw: bigint, clusterSize: number): BitmapTableEntry {
  const offset = raw & TABLE_OFFSET_MASK;
  if ((raw & TABLE_RESERVED_MASK) !== 0n) return { kind: 'invalid', raw };
  if (offset === 0n) return (raw & 1n) !== 0n ? { kind: 'ones' } : { kind: 'zeros' };
  if ((raw & 1n) !== 0n || offset % BigInt(clusterSize) !== 0n) return { kind: 'invalid', raw };
  return { kind: 'data', offset: Number(offset) };
}
