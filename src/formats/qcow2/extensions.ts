/**
 * qcow2 header extensions: the typed records that follow the header in
 * cluster 0 (qcow2.txt "Header extensions"). Parsing keeps every record it does
 * not understand so that rewriting cluster 0 loses nothing; serialising writes
 * them in the order QEMU's qcow2_update_header uses.
 */
import { VdiskError } from '../../errors.js';
import { hex, toSafeNumber } from '../../util/int64.js';

export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_BITMAPS = 0x23852875;
export const EXT_DATA_FILE = 0x44415441;

/** QEMU keeps the backing format in a 16-byte buffer; longer names are refused. */
const MAX_BACKING_FORMAT_LENGTH = 15;
/** QEMU caps (qcow2.h QCOW2_MAX_BITMAPS / QCOW2_MAX_BITMAP_DIRECTORY_SIZE). */
export const MAX_BITMAPS = 65535;
export const MAX_BITMAP_DIRECTORY_SIZE = 1024 * MAX_BITMAPS;

export type FeatureKind = 'incompatible' | 'compatible' | 'autoclear';

export interface FeatureName {
  readonly kind: FeatureKind | number;
  readonly bit: number;
  readonly name: string;
}

export interface BitmapsExtension {
  readonly nbBitmaps: number;
  readonly directorySize: number;
  readonly directoryOffset: number;
}

export interface CryptoHeaderExtension {
  readonly offset: number;
  readonly length: number;
}

export interface UnknownExtension {
  readonly magic: number;
  readonly data: Uint8Array;
}

export interface Qcow2Extensions {
  readonly backingFormat: string | null;
  readonly dataFile: string | null;
  readonly cryptoHeader: CryptoHeaderExtension | null;
  /** The feature name table as found in the image (QEMU regenerates its own when writing). */
  readonly featureNames: readonly FeatureName[];
  readonly bitmaps: BitmapsExtension | null;
  /** Extensions vdisk does not know, in file order; written back verbatim. */
  readonly unknown: readonly UnknownExtension[];
}

export const NO_EXTENSIONS: Qcow2Extensions = {
  backingFormat: null,
  dataFile: null,
  cryptoHeader: null,
  featureNames: [],
  bitmaps: null,
  unknown: [],
};

/** The feature name table QEMU writes (block/qcow2.c qcow2_update_header), in its order. */
export const QEMU_FEATURE_TABLE: readonly FeatureName[] = [
  { kind: 'incompatible', bit: 0, name: 'dirty bit' },
  { kind: 'incompatible', bit: 1, name: 'corrupt bit' },
  { kind: 'incompatible', bit: 2, name: 'external data file' },
  { kind: 'incompatible', bit: 3, name: 'compression type' },
  { kind: 'incompatible', bit: 4, name: 'extended L2 entries' },
  { kind: 'compatible', bit: 0, name: 'lazy refcounts' },
  { kind: 'autoclear', bit: 0, name: 'bitmaps' },
  { kind: 'autoclear', bit: 1, name: 'raw external data' },
];

const FEATURE_ENTRY_SIZE = 48;
const FEATURE_NAME_SIZE = 46;
const KIND_CODES: readonly FeatureKind[] = ['incompatible', 'compatible', 'autoclear'];

const utf8 = new TextDecoder('utf-8');
const encoder = new TextEncoder();

/** Decodes a name stored without NUL; like QEMU's C strings it ends at the first NUL. */
export function decodeName(bytes: Uint8Array): string {
  const nul = bytes.indexOf(0);
  return utf8.decode(nul < 0 ? bytes : bytes.subarray(0, nul));
}

export function encodeName(name: string): Uint8Array {
  return encoder.encode(name);
}

export interface ExtensionAreaOptions {
  readonly file: string;
  /** Where the extension area starts (header_length, or 72 for v2). */
  readonly start: number;
  /** Where it must end: backing_file_offset when there is a backing name, else the cluster size. */
  readonly end: number;
  readonly clusterSize: number;
  /**
   * Autoclear bit 0. Without it QEMU ignores (and drops) the bitmaps extension:
   * a program without bitmap support has modified the image since.
   */
  readonly bitmapsConsistent: boolean;
}

function corrupt(file: string, message: string, offset: number, field: string): VdiskError {
  return new VdiskError('ECORRUPT', `Cannot open '${file}': ${message}`, { file, offset, field });
}

/**
 * Parses the extension area of cluster 0 as QEMU's qcow2_read_extensions does:
 * records until the end marker or the end of the area; a record whose data runs
 * past the area is an error.
 */
export function parseExtensions(cluster0: Uint8Array, options: ExtensionAreaOptions): Qcow2Extensions {
  const { file, start, end } = options;
  const view = new DataView(cluster0.buffer, cluster0.byteOffset, cluster0.byteLength);
  let backingFormat: string | null = null;
  let dataFile: string | null = null;
  let cryptoHeader: CryptoHeaderExtension | null = null;
  let featureNames: FeatureName[] = [];
  let bitmaps: BitmapsExtension | null = null;
  const unknown: UnknownExtension[] = [];
  const seen = new Set<number>();
  let offset = start;
  while (offset < end) {
    if (offset + 8 > end || offset + 8 > cluster0.length) {
      throw corrupt(file, `header extension at ${hex(offset)} overruns the extension area (ends at ${hex(end)})`, offset, 'header_extension');
    }
    const magic = view.getUint32(offset, false);
    const length = view.getUint32(offset + 4, false);
    const dataStart = offset + 8;
    if (length > end - dataStart) {
      throw corrupt(
        file,
        `header extension ${hex(magic)} at ${hex(offset)} with length ${hex(length)} overruns the extension area (ends at ${hex(end)})`,
        offset,
        'header_extension',
      );
    }
    if (magic === EXT_END) break;
    const data = cluster0.subarray(dataStart, dataStart + length);
    if (magic !== EXT_FEATURE_TABLE && seen.has(magic)) {
      throw corrupt(file, `header extension ${hex(magic)} appears twice (second at ${hex(offset)})`, offset, 'header_extension');
    }
    seen.add(magic);
    switch (magic) {
      case EXT_BACKING_FORMAT:
        if (length > MAX_BACKING_FORMAT_LENGTH) {
          throw corrupt(file, `backing format extension at ${hex(offset)} is too long (${length} bytes, at most ${MAX_BACKING_FORMAT_LENGTH})`, offset, 'backing_format');
        }
        backingFormat = decodeName(data);
        break;
      case EXT_DATA_FILE:
        dataFile = decodeName(data);
        break;
      case EXT_CRYPTO_HEADER: {
        if (length !== 16) {
          throw corrupt(file, `full disk encryption extension at ${hex(offset)} has length ${length}, expected 16`, offset, 'crypto_header');
        }
        const ctx = { file, offset: dataStart, field: 'crypto_header' };
        cryptoHeader = {
          offset: toSafeNumber(view.getBigUint64(dataStart, false), 'Encryption header offset', ctx),
          length: toSafeNumber(view.getBigUint64(dataStart + 8, false), 'Encryption header length', ctx),
        };
        break;
      }
      case EXT_FEATURE_TABLE:
        featureNames = parseFeatureTable(data);
        break;
      case EXT_BITMAPS:
        if (length !== 24) {
          throw corrupt(file, `bitmaps extension at ${hex(offset)} has length ${length}, expected 24`, offset, 'bitmaps_ext');
        }
        if (options.bitmapsConsistent) bitmaps = parseBitmapsExtension(data, { file, offset, clusterSize: options.clusterSize });
        break;
      default:
        unknown.push({ magic, data: data.slice() });
    }
    offset = dataStart + alignUp8(length);
  }
  return { backingFormat, dataFile, cryptoHeader, featureNames, bitmaps, unknown };
}

function alignUp8(n: number): number {
  return Math.ceil(n / 8) * 8;
}

function parseFeatureTable(data: Uint8Array): FeatureName[] {
  const out: FeatureName[] = [];
  for (let pos = 0; pos + FEATURE_ENTRY_SIZE <= data.length; pos += FEATURE_ENTRY_SIZE) {
    const code = data[pos] ?? 0;
    out.push({
      kind: KIND_CODES[code] ?? code,
      bit: data[pos + 1] ?? 0,
      name: decodeName(data.subarray(pos + 2, pos + 2 + FEATURE_NAME_SIZE)),
    });
  }
  return out;
}

function parseBitmapsExtension(data: Uint8Array, at: { file: string; offset: number; clusterSize: number }): BitmapsExtension {
  const { file, offset } = at;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const nbBitmaps = view.getUint32(0, false);
  const reserved = view.getUint32(4, false);
  const directorySize = view.getBigUint64(8, false);
  const directoryOffset = view.getBigUint64(16, false);
  if (nbBitmaps === 0) throw corrupt(file, 'bitmaps extension lists zero bitmaps', offset, 'nb_bitmaps');
  if (nbBitmaps > MAX_BITMAPS) {
    throw corrupt(file, `bitmaps extension lists too many bitmaps (${hex(nbBitmaps)}, at most ${hex(MAX_BITMAPS)})`, offset, 'nb_bitmaps');
  }
  if (reserved !== 0) throw corrupt(file, `bitmaps extension reserved field is ${hex(reserved)}, expected 0`, offset + 12, 'bitmaps_ext');
  if (directorySize > BigInt(MAX_BITMAP_DIRECTORY_SIZE)) {
    throw corrupt(file, `bitmap directory size ${hex(directorySize)} exceeds the maximum ${hex(MAX_BITMAP_DIRECTORY_SIZE)}`, offset + 16, 'bitmap_directory_size');
  }
  if (directoryOffset > BigInt(Number.MAX_SAFE_INTEGER) || directoryOffset % BigInt(at.clusterSize) !== 0n) {
    throw corrupt(
      file,
      `bitmap directory offset ${hex(directoryOffset)} is not aligned to the cluster size ${hex(at.clusterSize)}`,
      offset + 24,
      'bitmap_directory_offset',
    );
  }
  return { nbBitmaps, directorySize: Number(directorySize), directoryOffset: Number(directoryOffset) };
}

export interface SerializeExtensionsOptions {
  readonly version: 2 | 3;
  readonly clusterSize: number;
}

/**
 * The bytes of the extension area as QEMU's qcow2_update_header writes them:
 * backing format, data file name, FDE pointer, QEMU's own feature name table
 * (v3 with clusters over 4 KiB only, so 512-byte-cluster images keep room for a
 * backing name), bitmaps, unknown extensions, end marker.
 */
export function serializeExtensions(ext: Qcow2Extensions, options: SerializeExtensionsOptions): Uint8Array {
  const records: Uint8Array[] = [];
  if (ext.backingFormat !== null) records.push(record(EXT_BACKING_FORMAT, encodeName(ext.backingFormat)));
  if (ext.dataFile !== null) records.push(record(EXT_DATA_FILE, encodeName(ext.dataFile)));
  if (ext.cryptoHeader !== null && ext.cryptoHeader.offset !== 0) {
    const data = new Uint8Array(16);
    const view = new DataView(data.buffer);
    view.setBigUint64(0, BigInt(ext.cryptoHeader.offset), false);
    view.setBigUint64(8, BigInt(ext.cryptoHeader.length), false);
    records.push(record(EXT_CRYPTO_HEADER, data));
  }
  if (options.version >= 3 && options.clusterSize > 4096) records.push(record(EXT_FEATURE_TABLE, featureTableBytes(QEMU_FEATURE_TABLE)));
  if (ext.bitmaps !== null && ext.bitmaps.nbBitmaps > 0) {
    const data = new Uint8Array(24);
    const view = new DataView(data.buffer);
    view.setUint32(0, ext.bitmaps.nbBitmaps, false);
    view.setBigUint64(8, BigInt(ext.bitmaps.directorySize), false);
    view.setBigUint64(16, BigInt(ext.bitmaps.directoryOffset), false);
    records.push(record(EXT_BITMAPS, data));
  }
  for (const u of ext.unknown) records.push(record(u.magic, u.data));
  records.push(record(EXT_END, new Uint8Array(0)));
  return concat(records);
}

function featureTableBytes(table: readonly FeatureName[]): Uint8Array {
  const out = new Uint8Array(table.length * FEATURE_ENTRY_SIZE);
  table.forEach((f, i) => {
    const pos = i * FEATURE_ENTRY_SIZE;
    out[pos] = typeof f.kind === 'number' ? f.kind : KIND_CODES.indexOf(f.kind);
    out[pos + 1] = f.bit;
    out.set(encodeName(f.name).subarray(0, FEATURE_NAME_SIZE), pos + 2);
  });
  return out;
}

function record(magic: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + alignUp8(data.length));
  const view = new DataView(out.buffer);
  view.setUint32(0, magic, false);
  view.setUint32(4, data.length, false);
  out.set(data, 8);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/**
 * Names the unknown bits of `mask` in one feature class, as QEMU's
 * report_unsupported_feature does: names from the image's table first, then
 * "Unknown incompatible feature: <hex>" for the rest.
 */
export function describeFeatures(mask: bigint, kind: FeatureKind, table: readonly FeatureName[]): string {
  const parts: string[] = [];
  let rest = mask;
  for (const f of table) {
    const bit = 1n << BigInt(f.bit & 63);
    if (f.kind === kind && (rest & bit) !== 0n) {
      parts.push(f.name);
      rest &= ~bit;
    }
  }
  if (rest !== 0n) parts.push(`Unknown ${kind} feature: ${rest.toString(16)}`);
  return parts.join(', ');
}
