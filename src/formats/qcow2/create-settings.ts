/**
 * qemu-img create -o options for qcow2: parsed and validated in the order QEMU
 * checks them, with QEMU's messages, before any layout is planned or byte written.
 */
import { VdiskError } from '../../errors.js';
import { isPowerOfTwo, parseSize } from '../../util/size.js';
import type { CreateOptions } from '../registry-types.js';
import { MAX_L1_BYTES, l1EntriesFor } from './header.js';

export type Preallocation = 'off' | 'metadata' | 'falloc' | 'full';

/** qemu-img create -o options for qcow2, validated. */
export interface Qcow2CreateSettings {
  /** Virtual size, rounded up to 512 bytes as qemu-img does. */
  readonly size: number;
  readonly version: 2 | 3;
  readonly clusterBits: number;
  readonly refcountOrder: number;
  readonly lazyRefcounts: boolean;
  readonly extendedL2: boolean;
  readonly preallocation: Preallocation;
  readonly backingFile: string | null;
  readonly backingFormat: string | null;
  readonly compressionType: 0 | 1;
  readonly dataFile: string | null;
  readonly dataFileRaw: boolean;
}

const KNOWN_OPTIONS = new Set([
  'size',
  'compat',
  'cluster_size',
  'extended_l2',
  'refcount_bits',
  'lazy_refcounts',
  'preallocation',
  'backing_file',
  'backing_fmt',
  'compression_type',
  'data_file',
  'data_file_raw',
  'encryption',
  'encrypt.format',
]);

function invalid(message: string, field: string): VdiskError {
  return new VdiskError('EINVAL', message, { field });
}

function parseBool(name: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  const v = value.toLowerCase();
  if (v === 'on' || v === 'yes' || v === 'true' || v === 'y') return true;
  if (v === 'off' || v === 'no' || v === 'false' || v === 'n') return false;
  throw invalid(`Parameter '${name}' expects 'on' or 'off'`, name);
}

const V3_HINT = '(use version=v3 or greater)';

/**
 * Validates qemu-img create options for qcow2, in the order QEMU checks them,
 * with QEMU's messages.
 */
export function parseCreateSettings(options: CreateOptions): Qcow2CreateSettings {
  const o = options.options;
  for (const key of Object.keys(o)) {
    if (!KNOWN_OPTIONS.has(key) && !key.startsWith('encrypt.')) throw invalid(`Invalid parameter '${key}'`, key);
  }
  if (o.encryption !== undefined && parseBool('encryption', o.encryption)) {
    throw new VdiskError('ENOTSUP', 'Encrypted qcow2 images are not supported', { field: 'encryption' });
  }
  if (Object.keys(o).some((k) => k.startsWith('encrypt.'))) {
    throw new VdiskError('ENOTSUP', 'Encrypted qcow2 images are not supported', { field: 'encrypt.format' });
  }
  const sizeValue = o.size !== undefined ? parseSize(o.size) : options.size;
  if (!Number.isSafeInteger(sizeValue) || sizeValue < 0) throw invalid(`Invalid image size ${sizeValue}`, 'size');
  const size = Math.ceil(sizeValue / 512) * 512;

  const compat = o.compat ?? '1.1';
  let version: 2 | 3;
  if (compat === '0.10' || compat === 'v2') version = 2;
  else if (compat === '1.1' || compat === 'v3') version = 3;
  else throw invalid(`Parameter 'version' does not accept value '${compat}'`, 'compat');

  const prealloc = o.preallocation ?? 'off';
  if (prealloc !== 'off' && prealloc !== 'metadata' && prealloc !== 'falloc' && prealloc !== 'full') {
    throw invalid(`Parameter 'preallocation' does not accept value '${prealloc}'`, 'preallocation');
  }
  let preallocation: Preallocation = prealloc;

  const clusterSize = o.cluster_size !== undefined ? parseSizeOption(o.cluster_size, 'cluster_size') : 65536;
  if (!isPowerOfTwo(clusterSize) || clusterSize < 512 || clusterSize > 2 * 1024 * 1024) {
    throw invalid('Cluster size must be a power of two between 512 and 2048k', 'cluster_size');
  }
  const clusterBits = Math.log2(clusterSize);

  const extendedL2 = parseBool('extended_l2', o.extended_l2);
  if (extendedL2) {
    if (version < 3) throw invalid(`Extended L2 entries are only supported with compatibility level 1.1 and above ${V3_HINT}`, 'extended_l2');
    if (clusterSize < 16384) throw invalid('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes', 'extended_l2');
  }

  const backingFile = options.backingFile ?? o.backing_file ?? null;
  const backingFormat = options.backingFormat ?? o.backing_fmt ?? null;
  if (backingFile !== null && preallocation !== 'off' && !extendedL2) {
    throw invalid('Backing file and preallocation can only be used at the same time if extended_l2 is on', 'preallocation');
  }
  if (backingFormat !== null && backingFile === null) throw invalid('Backing format cannot be used without backing file', 'backing_fmt');

  const lazyRefcounts = parseBool('lazy_refcounts', o.lazy_refcounts);
  if (lazyRefcounts && version < 3) {
    throw invalid(`Lazy refcounts only supported with compatibility level 1.1 and above ${V3_HINT}`, 'lazy_refcounts');
  }

  const refcountBits = o.refcount_bits !== undefined ? Number(o.refcount_bits) : 16;
  if (!Number.isInteger(refcountBits) || refcountBits < 1 || refcountBits > 64 || !isPowerOfTwo(refcountBits)) {
    throw invalid('Refcount width must be a power of two and may not exceed 64 bits', 'refcount_bits');
  }
  if (version < 3 && refcountBits !== 16) {
    throw invalid(`Different refcount widths than 16 bits require compatibility level 1.1 or above ${V3_HINT}`, 'refcount_bits');
  }
  const refcountOrder = Math.log2(refcountBits);

  const dataFile = o.data_file ?? null;
  if (dataFile !== null && version < 3) {
    throw invalid(`External data files are only supported with compatibility level 1.1 and above ${V3_HINT}`, 'data_file');
  }
  const dataFileRaw = parseBool('data_file_raw', o.data_file_raw);
  if (dataFileRaw && dataFile === null) throw invalid('data-file-raw requires data-file', 'data_file_raw');
  if (dataFileRaw && backingFile !== null) throw invalid('Backing file and data-file-raw cannot be used at the same time', 'data_file_raw');
  // A raw data file must read the same with or without the metadata: QEMU maps it 1:1.
  if (dataFileRaw && preallocation === 'off') preallocation = 'metadata';

  const ct = o.compression_type ?? 'zlib';
  if (ct !== 'zlib' && ct !== 'zstd') throw invalid(`Parameter 'compression-type' does not accept value '${ct}'`, 'compression_type');
  const compressionType = ct === 'zstd' ? 1 : 0;
  if (compressionType !== 0 && version < 3) {
    throw invalid(`Non-zlib compression type is only supported with compatibility level 1.1 and above ${V3_HINT}`, 'compression_type');
  }

  const l1Entries = l1EntriesFor(size, clusterBits, extendedL2 ? 16 : 8);
  if (l1Entries > MAX_L1_BYTES / 8) {
    throw invalid(`The image size is too large for file format 'qcow2' (try using a larger cluster size)`, 'size');
  }
  return {
    size,
    version,
    clusterBits,
    refcountOrder,
    lazyRefcounts,
    extendedL2,
    preallocation,
    backingFile,
    backingFormat,
    compressionType,
    dataFile,
    dataFileRaw,
  };
}

function parseSizeOption(text: string, field: string): number {
  try {
    return parseSize(text, field);
  } catch {
    throw invalid(`Parameter '${field}' expects a non-negative number below 2^64`, field);
  }
}
