/**
 * The qcow2 header (cluster 0): decoding with every check QEMU's qcow2_do_open
 * makes (and a few the spec asks for), and encoding exactly as QEMU's
 * qcow2_update_header writes it, so a rewritten cluster 0 is byte-identical.
 */
import { VdiskError } from '../../errors.js';
import { hex, toSafeNumber } from '../../util/int64.js';
import type { HostFile } from '../../host/host-file.js';
import {
  describeFeatures,
  encodeName,
  decodeName,
  parseExtensions,
  serializeExtensions,
  type Qcow2Extensions,
} from './extensions.js';

export const QCOW_MAGIC = 0x514649fb;
export const V2_HEADER_SIZE = 72;
/** The v3 header QEMU writes: 104 mandatory bytes + compression_type + 7 padding. */
export const V3_HEADER_SIZE = 112;
export const V3_MIN_HEADER_LENGTH = 104;
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
export const MIN_CLUSTER_BITS_EXTENDED_L2 = 14;
export const MAX_BACKING_NAME_LENGTH = 1023;
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024;
export const MAX_SNAPSHOTS = 65536;
/** Size of the fixed part of a snapshot table entry (QCowSnapshotHeader). */
export const SNAPSHOT_HEADER_SIZE = 40;

export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const INCOMPAT_KNOWN = 0x1fn;
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;
export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;
export const AUTOCLEAR_KNOWN = 0x3n;

export const COMPRESSION_ZLIB = 0;
export const COMPRESSION_ZSTD = 1;

export interface Qcow2Header {
  readonly version: 2 | 3;
  /** 0 when there is no backing file. */
  readonly backingFileOffset: number;
  readonly backingFileSize: number;
  readonly clusterBits: number;
  /** Virtual disk size in bytes. */
  readonly size: number;
  readonly cryptMethod: number;
  readonly l1Size: number;
  readonly l1TableOffset: number;
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
  readonly nbSnapshots: number;
  readonly snapshotsOffset: number;
  readonly incompatibleFeatures: bigint;
  readonly compatibleFeatures: bigint;
  readonly autoclearFeatures: bigint;
  /** v2: always 4. */
  readonly refcountOrder: number;
  /** v2: always 72. */
  readonly headerLength: number;
  readonly compressionType: number;
}

export interface ParsedHeaderCluster {
  readonly header: Qcow2Header;
  readonly extensions: Qcow2Extensions;
  readonly backingFile: string | null;
  /** Header bytes beyond the 112 QEMU knows (header_length > 112), kept verbatim. */
  readonly unknownHeaderFields: Uint8Array;
}

export interface ParseHeaderOptions {
  /** The image's name, for messages. */
  readonly file: string;
  /** Size of the image file, to refuse tables past its end. */
  readonly fileSize: number;
}

// ---- derived values --------------------------------------------------------

export function clusterSizeOf(h: Qcow2Header): number {
  return 2 ** h.clusterBits;
}

export function hasExtendedL2(h: Qcow2Header): boolean {
  return (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n;
}

export function hasDataFile(h: Qcow2Header): boolean {
  return (h.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
}

/** Bytes per L2 entry: 16 with extended L2 (entry + subcluster bitmap), else 8. */
export function l2EntrySizeOf(h: Pick<Qcow2Header, 'incompatibleFeatures'>): number {
  return (h.incompatibleFeatures & INCOMPAT_EXTL2) !== 0n ? 16 : 8;
}

/** Number of L1 entries needed to map `size` bytes. */
export function l1EntriesFor(size: number, clusterBits: number, l2EntrySize: number): number {
  const bytesPerL1Entry = 2 ** clusterBits * (2 ** clusterBits / l2EntrySize);
  return Math.ceil(size / bytesPerL1Entry);
}

// ---- parsing ---------------------------------------------------------------

function corrupt(file: string, message: string, offset: number, field: string): VdiskError {
  return new VdiskError('ECORRUPT', `Cannot open '${file}': ${message}`, { file, offset, field });
}

function unsupported(file: string, message: string, offset: number, field: string): VdiskError {
  return new VdiskError('ENOTSUP', `Cannot open '${file}': ${message}`, { file, offset, field });
}

/**
 * Reads cluster 0 of an image: first the fixed header to learn the cluster size,
 * then the whole cluster (at most 2 MiB, since larger cluster_bits are refused).
 */
export async function readHeaderCluster(host: HostFile): Promise<Uint8Array> {
  const head = new Uint8Array(2 ** MIN_CLUSTER_BITS);
  await host.read(head, 0);
  const bits = new DataView(head.buffer).getUint32(20, false);
  if (bits <= MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) return head;
  const cluster = new Uint8Array(2 ** bits);
  await host.read(cluster, 0);
  return cluster;
}

/**
 * Decodes and validates cluster 0 of a qcow2 image.
 *
 * @example
 * const parsed = parseHeaderCluster(await readHeaderCluster(host), { file: 'a.qcow2', fileSize: await host.size() });
 * parsed.header.size; // virtual size
 */
export function parseHeaderCluster(buf: Uint8Array, options: ParseHeaderOptions): ParsedHeaderCluster {
  const { file, fileSize } = options;
  if (buf.length < V2_HEADER_SIZE) throw corrupt(file, `header is truncated (${buf.length} bytes, at least 72 needed)`, 0, 'header');
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const u32 = (pos: number): number => v.getUint32(pos, false);
  const u64 = (pos: number): bigint => v.getBigUint64(pos, false);

  const magic = u32(0);
  if (magic !== QCOW_MAGIC) throw corrupt(file, `image is not in qcow2 format (magic ${hex(magic)}, expected ${hex(QCOW_MAGIC)})`, 0, 'magic');
  const version = u32(4);
  if (version !== 2 && version !== 3) throw unsupported(file, `unsupported qcow2 version ${version}`, 4, 'version');
  const clusterBits = u32(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw corrupt(file, `unsupported cluster size: 2^${clusterBits} (cluster_bits must be between 9 and 21)`, 20, 'cluster_bits');
  }
  const clusterSize = 2 ** clusterBits;
  // Work on a full cluster so that every later read lies inside the buffer.
  const cluster0 = buf.length >= clusterSize ? buf.subarray(0, clusterSize) : padTo(buf, clusterSize);

  let incompatibleFeatures = 0n;
  let compatibleFeatures = 0n;
  let autoclearFeatures = 0n;
  let refcountOrder = 4;
  let headerLength = V2_HEADER_SIZE;
  let compressionType = COMPRESSION_ZLIB;
  if (version === 3) {
    if (buf.length < V3_MIN_HEADER_LENGTH) throw corrupt(file, `header is truncated (${buf.length} bytes, at least 104 needed)`, 0, 'header');
    incompatibleFeatures = u64(72);
    compatibleFeatures = u64(80);
    autoclearFeatures = u64(88);
    refcountOrder = u32(96);
    headerLength = u32(100);
    if (headerLength < V3_MIN_HEADER_LENGTH) throw corrupt(file, `header_length ${hex(headerLength)} is too short (at least 0x68)`, 100, 'header_length');
    if (headerLength % 8 !== 0) throw corrupt(file, `header_length ${hex(headerLength)} is not a multiple of 8`, 100, 'header_length');
    if (headerLength > clusterSize) {
      throw corrupt(file, `header_length ${hex(headerLength)} exceeds the cluster size ${hex(clusterSize)}`, 100, 'header_length');
    }
    if (headerLength > 104) compressionType = cluster0[104] ?? 0;
  }
  const unknownHeaderFields = headerLength > V3_HEADER_SIZE ? cluster0.slice(V3_HEADER_SIZE, headerLength) : new Uint8Array(0);

  if (refcountOrder > 6) throw corrupt(file, `refcount_order ${refcountOrder} is too large (refcount width may not exceed 64 bits)`, 96, 'refcount_order');

  // Unknown incompatible bits: name them from the image's feature table, like QEMU.
  const backingFileOffsetBig = u64(8);
  const backingFileSize = u32(16);
  if (backingFileOffsetBig > BigInt(clusterSize)) {
    throw corrupt(file, `backing file name offset ${hex(backingFileOffsetBig)} lies outside cluster 0 (cluster size ${hex(clusterSize)})`, 8, 'backing_file_offset');
  }
  const backingFileOffset = Number(backingFileOffsetBig);
  const extEnd = backingFileOffset !== 0 ? backingFileOffset : clusterSize;
  const extStart = version === 3 ? headerLength : V2_HEADER_SIZE;
  const unknownIncompat = incompatibleFeatures & ~INCOMPAT_KNOWN;
  if (unknownIncompat !== 0n) {
    let names: string;
    try {
      const ext = parseExtensions(cluster0, { file, start: extStart, end: Math.max(extStart, extEnd), clusterSize, bitmapsConsistent: false });
      names = describeFeatures(unknownIncompat, 'incompatible', ext.featureNames);
    } catch {
      names = describeFeatures(unknownIncompat, 'incompatible', []);
    }
    throw unsupported(file, `Unsupported IMAGE feature(s): ${names}`, 72, 'incompatible_features');
  }
  if ((incompatibleFeatures & INCOMPAT_EXTL2) !== 0n && clusterBits < MIN_CLUSTER_BITS_EXTENDED_L2) {
    throw corrupt(
      file,
      `extended L2 entries need clusters of at least 16 KiB (cluster_bits ${clusterBits}, subcluster size ${hex(clusterSize / 32)})`,
      20,
      'cluster_bits',
    );
  }
  if (compressionType !== COMPRESSION_ZLIB && compressionType !== COMPRESSION_ZSTD) {
    throw unsupported(file, `unknown compression type ${compressionType}`, 104, 'compression_type');
  }
  const compressionBit = (incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n;
  if (compressionBit !== (compressionType !== COMPRESSION_ZLIB)) {
    throw corrupt(
      file,
      `compression type ${compressionType} is inconsistent with the compression type feature bit (${compressionBit ? 'set' : 'clear'})`,
      104,
      'compression_type',
    );
  }
  if ((autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n && (incompatibleFeatures & INCOMPAT_DATA_FILE) === 0n) {
    throw corrupt(file, 'the raw external data bit is set without the external data file bit', 88, 'autoclear_features');
  }

  const size = toSafeNumber(u64(24), 'Virtual size', { file, offset: 24, field: 'size' });
  const cryptMethod = u32(32);
  if (cryptMethod > 2) throw unsupported(file, `unsupported encryption method ${cryptMethod}`, 32, 'crypt_method');

  const l1Size = u32(36);
  const l2EntrySize = (incompatibleFeatures & INCOMPAT_EXTL2) !== 0n ? 16 : 8;
  if (l1Size > MAX_L1_BYTES / 8) throw corrupt(file, `active L1 table too large (${hex(l1Size)} entries, at most ${hex(MAX_L1_BYTES / 8)})`, 36, 'l1_size');
  const l1Needed = l1EntriesFor(size, clusterBits, l2EntrySize);
  if (l1Needed > 0x7fffffff) throw corrupt(file, `image is too big (virtual size ${hex(size)})`, 24, 'size');
  if (l1Size < l1Needed) {
    throw corrupt(file, `L1 table is too small (${hex(l1Size)} entries, virtual size ${hex(size)} needs ${hex(l1Needed)})`, 36, 'l1_size');
  }
  const l1TableOffset = validateTable({ file, fileSize, clusterSize, name: 'L1 table', field: 'l1_table_offset', at: 40, offset: u64(40), bytes: l1Size * 8 });

  const refcountTableClusters = u32(56);
  if (refcountTableClusters === 0) throw corrupt(file, 'image does not contain a reference count table (refcount_table_clusters is 0)', 56, 'refcount_table_clusters');
  if (refcountTableClusters > MAX_REFCOUNT_TABLE_BYTES / clusterSize) {
    throw corrupt(
      file,
      `reference count table too large (${hex(refcountTableClusters)} clusters, at most ${hex(MAX_REFCOUNT_TABLE_BYTES / clusterSize)})`,
      56,
      'refcount_table_clusters',
    );
  }
  const refcountTableOffset = validateTable({
    file,
    fileSize,
    clusterSize,
    name: 'reference count table',
    field: 'refcount_table_offset',
    at: 48,
    offset: u64(48),
    bytes: refcountTableClusters * clusterSize,
  });

  const nbSnapshots = u32(60);
  if (nbSnapshots > MAX_SNAPSHOTS) throw corrupt(file, `too many snapshots (${hex(nbSnapshots)}, at most ${hex(MAX_SNAPSHOTS)})`, 60, 'nb_snapshots');
  // Entries are variable-sized; the fixed 40-byte part of each must at least fit.
  const snapshotsOffset = validateTable({
    file,
    fileSize,
    clusterSize,
    name: 'snapshot table',
    field: 'snapshots_offset',
    at: 64,
    offset: u64(64),
    bytes: nbSnapshots * SNAPSHOT_HEADER_SIZE,
  });

  let backingFile: string | null = null;
  if (backingFileOffset !== 0) {
    const limit = Math.min(MAX_BACKING_NAME_LENGTH, clusterSize - backingFileOffset);
    if (backingFileSize > limit) {
      throw corrupt(
        file,
        `backing file name too long (${hex(backingFileSize)} bytes at ${hex(backingFileOffset)}, at most ${hex(limit)})`,
        16,
        'backing_file_size',
      );
    }
    if (backingFileOffset < extStart) {
      throw corrupt(file, `backing file name at ${hex(backingFileOffset)} overlaps the header (ends at ${hex(extStart)})`, 8, 'backing_file_offset');
    }
    backingFile = decodeName(cluster0.subarray(backingFileOffset, backingFileOffset + backingFileSize));
  }

  const extensions = parseExtensions(cluster0, {
    file,
    start: extStart,
    end: extEnd,
    clusterSize,
    bitmapsConsistent: (autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n,
  });

  const header: Qcow2Header = {
    version,
    backingFileOffset,
    backingFileSize: backingFileOffset !== 0 ? backingFileSize : 0,
    clusterBits,
    size,
    cryptMethod,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
  };
  return { header, extensions, backingFile, unknownHeaderFields };
}

function padTo(buf: Uint8Array, length: number): Uint8Array {
  const out = new Uint8Array(length);
  out.set(buf.subarray(0, length));
  return out;
}

interface TableCheck {
  readonly file: string;
  readonly fileSize: number;
  readonly clusterSize: number;
  readonly name: string;
  readonly field: string;
  /** Offset of the field in the header, for the error context. */
  readonly at: number;
  readonly offset: bigint;
  readonly bytes: number;
}

/**
 * QEMU's validate_table plus the end-of-file check: a table of `bytes` bytes at
 * `offset` must be cluster aligned and lie inside the file. An empty table may
 * have any offset (QEMU leaves it 0 or stale).
 */
function validateTable(t: TableCheck): number {
  if (t.bytes === 0) return t.offset > BigInt(Number.MAX_SAFE_INTEGER) ? 0 : Number(t.offset);
  if (t.offset % BigInt(t.clusterSize) !== 0n) {
    throw corrupt(t.file, `${t.name} offset ${hex(t.offset)} is not aligned to the cluster size ${hex(t.clusterSize)}`, t.at, t.field);
  }
  if (t.offset + BigInt(t.bytes) > BigInt(t.fileSize)) {
    throw corrupt(
      t.file,
      `${t.name} at ${hex(t.offset)} (${hex(t.bytes)} bytes) extends past end of file (size ${hex(t.fileSize)})`,
      t.at,
      t.field,
    );
  }
  if (t.offset === 0n) throw corrupt(t.file, `${t.name} offset 0 overlaps the header`, t.at, t.field);
  return Number(t.offset);
}

// ---- serialising -------------------------------------------------------------

/**
 * Encodes cluster 0 exactly as QEMU's qcow2_update_header: the 72-byte (v2) or
 * 112-byte (v3) header, unknown header fields, the extensions, the end marker and
 * the backing file name right after it; the rest of the cluster is zero.
 * header_length, backing_file_offset and backing_file_size are recomputed.
 */
export function serializeHeaderCluster(parsed: ParsedHeaderCluster, clusterSize: number): Uint8Array {
  const h = parsed.header;
  const out = new Uint8Array(clusterSize);
  const v = new DataView(out.buffer);
  const fixedSize = h.version === 2 ? V2_HEADER_SIZE : V3_HEADER_SIZE;
  const headerLength = V3_HEADER_SIZE + parsed.unknownHeaderFields.length;
  v.setUint32(0, QCOW_MAGIC, false);
  v.setUint32(4, h.version, false);
  v.setUint32(20, h.clusterBits, false);
  v.setBigUint64(24, BigInt(h.size), false);
  v.setUint32(32, h.cryptMethod, false);
  v.setUint32(36, h.l1Size, false);
  v.setBigUint64(40, BigInt(h.l1TableOffset), false);
  v.setBigUint64(48, BigInt(h.refcountTableOffset), false);
  v.setUint32(56, h.refcountTableClusters, false);
  v.setUint32(60, h.nbSnapshots, false);
  v.setBigUint64(64, BigInt(h.snapshotsOffset), false);
  if (h.version === 3) {
    v.setBigUint64(72, h.incompatibleFeatures, false);
    v.setBigUint64(80, h.compatibleFeatures, false);
    v.setBigUint64(88, h.autoclearFeatures, false);
    v.setUint32(96, h.refcountOrder, false);
    v.setUint32(100, headerLength, false);
    out[104] = h.compressionType;
  }
  let pos = fixedSize;
  const tooBig = (): VdiskError =>
    new VdiskError('ENOSPC', `Cannot write the header: cluster 0 (${hex(clusterSize)} bytes) cannot hold the header, its extensions and the backing file name`, {
      field: 'header',
    });
  if (parsed.unknownHeaderFields.length > 0) {
    if (pos + parsed.unknownHeaderFields.length > clusterSize) throw tooBig();
    out.set(parsed.unknownHeaderFields, pos);
    pos += parsed.unknownHeaderFields.length;
  }
  const ext = serializeExtensions(parsed.extensions, { version: h.version, clusterSize });
  if (pos + ext.length > clusterSize) throw tooBig();
  out.set(ext, pos);
  pos += ext.length;
  if (parsed.backingFile !== null) {
    const name = encodeName(parsed.backingFile);
    if (pos + name.length > clusterSize) throw tooBig();
    out.set(name, pos);
    v.setBigUint64(8, BigInt(pos), false);
    v.setUint32(16, name.length, false);
  }
  return out;
}

/** The header with a new value for some fields (the parsed object is immutable). */
export function withHeader(parsed: ParsedHeaderCluster, changes: Partial<Qcow2Header>): ParsedHeaderCluster {
  return { ...parsed, header: { ...parsed.header, ...changes } };
}
