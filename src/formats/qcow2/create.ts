/**
 * qcow2 image creation, byte-identical to `qemu-img create -f qcow2`.
 *
 * QEMU creates an image in steps (block/qcow2.c qcow2_co_create): a bare header
 * and a one-cluster refcount table + block, then it opens that image, counts
 * the first three clusters, rewrites the header, grows the L1 table, preallocates
 * and sets the backing file. Every later cluster position depends on QEMU's
 * allocator (first free cluster, refcount blocks that describe themselves, a
 * refcount table that moves when it grows), so the layout is computed here by
 * replaying that allocator over an in-memory sparse file, then written at once.
 */
import { VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import { isPowerOfTwo, parseSize } from '../../util/size.js';
import { NodeHostFile } from '../../host/node-file.js';
import type { HostFile } from '../../host/host-file.js';
import type { CreateOptions } from '../registry-types.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  MAX_L1_BYTES,
  MAX_REFCOUNT_TABLE_BYTES,
  V3_HEADER_SIZE,
  l1EntriesFor,
  serializeHeaderCluster,
  type ParsedHeaderCluster,
} from './header.js';
import { NO_EXTENSIONS } from './extensions.js';
import { getRefcount, refcountBlockEntries, setRefcount } from './refcount-block.js';

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

// ---- the in-memory image --------------------------------------------------------

/** A sparse file in memory: written clusters plus the length the writes reached. */
class SparseImage {
  readonly clusters = new Map<number, Uint8Array>();
  length = 0;
  constructor(readonly clusterSize: number) {}

  write(offset: number, data: Uint8Array): void {
    this.length = Math.max(this.length, offset + data.length);
    let pos = 0;
    while (pos < data.length) {
      const at = offset + pos;
      const index = Math.floor(at / this.clusterSize);
      const within = at - index * this.clusterSize;
      const n = Math.min(this.clusterSize - within, data.length - pos);
      const piece = data.subarray(pos, pos + n);
      let cluster = this.clusters.get(index);
      // Zeros over a never-written cluster are what a sparse file reads anyway.
      if (cluster === undefined && !piece.some((b) => b !== 0)) {
        pos += n;
        continue;
      }
      if (cluster === undefined) {
        cluster = new Uint8Array(this.clusterSize);
        this.clusters.set(index, cluster);
      }
      cluster.set(piece, within);
      pos += n;
    }
  }

  writeZeroCluster(offset: number): void {
    this.length = Math.max(this.length, offset + this.clusterSize);
    this.clusters.get(offset / this.clusterSize)?.fill(0);
  }

  /** The cluster's bytes, materialised for in-place edits (its on-disk copy is already counted in length). */
  cluster(offset: number): Uint8Array {
    const index = offset / this.clusterSize;
    let c = this.clusters.get(index);
    if (c === undefined) {
      c = new Uint8Array(this.clusterSize);
      this.clusters.set(index, c);
    }
    return c;
  }
}

/** Largest request QEMU issues in one go (BDRV_REQUEST_MAX_BYTES). */
const REQUEST_MAX_BYTES = 0x7fffffff - 511;
const INT_MAX = 0x7fffffff;

type Again = 'again';

/**
 * QEMU's cluster allocator (qcow2-refcount.c) replayed over a SparseImage: the
 * same first-free search, self-describing refcount blocks, refcount table growth
 * and retry-on-EAGAIN, so clusters land exactly where QEMU puts them.
 */
export class QemuLayoutAllocator {
  readonly cs: number;
  readonly order: number;
  readonly rbEntries: number;
  reftable: number[];
  reftableOffset: number;
  maxReftableIndex = 0;
  freeIndex = 0;

  constructor(
    readonly image: SparseImage,
    geometry: { clusterBits: number; refcountOrder: number; reftableOffset: number; reftable: number[] },
  ) {
    this.cs = 2 ** geometry.clusterBits;
    this.order = geometry.refcountOrder;
    this.rbEntries = refcountBlockEntries(this.cs, this.order);
    this.reftable = geometry.reftable;
    this.reftableOffset = geometry.reftableOffset;
    this.updateMaxIndex();
  }

  get reftableClusters(): number {
    return (this.reftable.length * 8) / this.cs;
  }

  private updateMaxIndex(): void {
    let i = this.reftable.length - 1;
    while (i > 0 && !this.reftable[i]) i--;
    this.maxReftableIndex = i;
  }

  refcount(clusterIndex: number): number {
    const ti = Math.floor(clusterIndex / this.rbEntries);
    if (ti >= this.reftable.length) return 0;
    const block = this.reftable[ti] ?? 0;
    if (block === 0) return 0;
    return getRefcount(this.image.cluster(block), clusterIndex % this.rbEntries, this.order);
  }

  private allocNoref(bytes: number): number {
    const nb = Math.ceil(bytes / this.cs);
    for (let i = 0; i < nb; i++) {
      const next = this.freeIndex++;
      if (this.refcount(next) !== 0) i = -1;
    }
    return (this.freeIndex - nb) * this.cs;
  }

  /** qcow2_alloc_clusters: `bytes` worth of clusters at the first free run. */
  allocClusters(bytes: number): number {
    for (;;) {
      const offset = this.allocNoref(bytes);
      if (this.updateRefcount(offset, bytes, false) !== 'again') return offset;
      // Observed from qemu-img 7.2: the search restarts at the abandoned run,
      // even when no cluster of it had been counted yet.
      this.freeIndex = Math.min(this.freeIndex, offset / this.cs);
    }
  }

  /** qcow2_alloc_clusters_at: as many of `count` clusters from `offset` as are free. */
  allocClustersAt(offset: number, count: number): number {
    if (count === 0) return 0;
    for (;;) {
      let ci = offset / this.cs;
      let i = 0;
      for (; i < count; i++) if (this.refcount(ci++) !== 0) break;
      if (this.updateRefcount(offset, i * this.cs, false) !== 'again') return i;
    }
  }

  freeClusters(offset: number, bytes: number): void {
    this.updateRefcount(offset, bytes, true);
  }

  private updateRefcount(offset: number, length: number, decrease: boolean): Again | undefined {
    if (length === 0) return undefined;
    const start = Math.floor(offset / this.cs) * this.cs;
    const last = Math.floor((offset + length - 1) / this.cs) * this.cs;
    let oldTableIndex = -1;
    let block = 0;
    let clusterOffset = start;
    let failed = false;
    for (; clusterOffset <= last; clusterOffset += this.cs) {
      const ci = clusterOffset / this.cs;
      const ti = Math.floor(ci / this.rbEntries);
      if (ti !== oldTableIndex) {
        const got = this.allocRefcountBlock(ci);
        if (got === 'again') {
          failed = true;
          break;
        }
        block = got;
      }
      oldTableIndex = ti;
      const bytes = this.image.cluster(block);
      const bi = ci % this.rbEntries;
      const value = getRefcount(bytes, bi, this.order) + (decrease ? -1 : 1);
      if (value < 0 || value > 2 ** 2 ** this.order - 1) {
        throw new VdiskError('EINVAL', `Refcount of cluster ${hex(clusterOffset)} out of range while laying out the image`, { offset: clusterOffset });
      }
      if (value === 0 && ci < this.freeIndex) this.freeIndex = ci;
      setRefcount(bytes, bi, this.order, value);
    }
    if (!failed) return undefined;
    // Undo the part already counted, as QEMU does, then let the caller search again.
    this.updateRefcount(offset, clusterOffset - offset, !decrease);
    return 'again';
  }

  /** alloc_refcount_block: the block covering `clusterIndex`, or 'again' after creating one. */
  private allocRefcountBlock(clusterIndex: number): number | Again {
    const ti = Math.floor(clusterIndex / this.rbEntries);
    if (ti < this.reftable.length) {
      const existing = this.reftable[ti] ?? 0;
      if (existing !== 0) return existing;
    }
    const newBlock = this.allocNoref(this.cs);
    const span = this.cs * this.rbEntries;
    if (Math.floor(newBlock / span) === Math.floor((clusterIndex * this.cs) / span)) {
      this.image.writeZeroCluster(newBlock);
      setRefcount(this.image.cluster(newBlock), (newBlock / this.cs) % this.rbEntries, this.order, 1);
    } else {
      if (this.updateRefcount(newBlock, this.cs, false) === 'again') return 'again';
      this.image.writeZeroCluster(newBlock);
    }
    this.image.length = Math.max(this.image.length, newBlock + this.cs);
    if (ti < this.reftable.length) {
      this.reftable[ti] = newBlock;
      this.image.write(this.reftableOffset + ti * 8, u64(newBlock));
      this.maxReftableIndex = Math.max(this.maxReftableIndex, ti);
      return 'again';
    }
    const blocksUsed = Math.ceil(Math.max(clusterIndex + 1, newBlock / this.cs + 1) / this.rbEntries);
    this.refcountArea({ start: blocksUsed * this.rbEntries * this.cs, additionalClusters: 0, exactSize: false, newBlockIndex: ti, newBlockOffset: newBlock });
    return 'again';
  }

  /**
   * qcow2_refcount_area: new self-covering refcount blocks and table at `start`
   * (the end of the image), covering `additionalClusters` more beyond them.
   * Returns the offset right after the new structures.
   */
  refcountArea(a: { start: number; additionalClusters: number; exactSize: boolean; newBlockIndex: number; newBlockOffset: number }): number {
    const { cs } = this;
    const total = refcountMetadataBlocks(a.start / cs + a.additionalClusters, { clusterSize: cs, refcountOrder: this.order, generous: !a.exactSize });
    const areaIndex = Math.floor(a.start / cs / this.rbEntries);
    let tableSize = a.exactSize ? total : total + Math.ceil(total / 2);
    tableSize = Math.ceil(tableSize / (cs / 8)) * (cs / 8);
    if (tableSize * 8 > MAX_REFCOUNT_TABLE_BYTES) {
      throw new VdiskError('EFBIG', `The refcount table would exceed ${hex(MAX_REFCOUNT_TABLE_BYTES)} bytes`, { field: 'refcount_table_clusters' });
    }
    const tableClusters = (tableSize * 8) / cs;
    const table = new Array<number>(tableSize).fill(0);
    const keep = tableSize > this.maxReftableIndex ? this.maxReftableIndex + 1 : tableSize;
    for (let i = 0; i < keep; i++) table[i] = this.reftable[i] ?? 0;
    if (a.newBlockOffset) table[a.newBlockIndex] = a.newBlockOffset;
    let missing = 0;
    for (let i = areaIndex; i < total; i++) if (!table[i]) missing++;
    const tableOffset = a.start + missing * cs;
    const end = tableOffset + tableClusters * cs;
    let blockOffset = a.start;
    for (let i = areaIndex; i < total; i++) {
      let block = table[i] ?? 0;
      if (!block) {
        block = blockOffset;
        this.image.writeZeroCluster(block);
        table[i] = block;
        blockOffset += cs;
      }
      const firstCovered = i * this.rbEntries * cs;
      if (firstCovered < end) {
        const bytes = this.image.cluster(block);
        let j = firstCovered < a.start ? (a.start - firstCovered) / cs : 0;
        const endIndex = Math.min((end - firstCovered) / cs, this.rbEntries);
        for (; j < endIndex; j++) setRefcount(bytes, j, this.order, 1);
      }
    }
    const tableBytes = new Uint8Array(tableSize * 8);
    table.forEach((v, i) => tableBytes.set(u64(v), i * 8));
    this.image.write(tableOffset, tableBytes);
    const oldOffset = this.reftableOffset;
    const oldSize = this.reftable.length;
    this.reftable = table;
    this.reftableOffset = tableOffset;
    this.updateMaxIndex();
    this.freeClusters(oldOffset, oldSize * 8);
    return end;
  }

  /** qcow2_get_last_cluster: the highest cluster below `size` with a non-zero refcount. */
  lastUsedCluster(size: number): number {
    for (let i = Math.ceil(size / this.cs) - 1; i >= 0; i--) if (this.refcount(i) > 0) return i;
    return -1;
  }
}

/**
 * qcow2_refcount_metadata_size's block count: refcount blocks needed to count
 * `clusters` clusters plus the refcount structures themselves (the fixed point),
 * optionally with room for the table to grow by half.
 */
export function refcountMetadataBlocks(clusters: number, g: { clusterSize: number; refcountOrder: number; generous: boolean }): number {
  const perTableCluster = g.clusterSize / 8;
  const perBlock = refcountBlockEntries(g.clusterSize, g.refcountOrder);
  let table = 0;
  let blocks = 0;
  let n = 0;
  let last: number;
  let generous = g.generous;
  let count = clusters;
  do {
    last = n;
    blocks = Math.ceil((count + table + blocks) / perBlock);
    table = Math.ceil(blocks / perTableCluster);
    n = count + blocks + table;
    if (n === last && generous) {
      count += Math.ceil(table / 2);
      n = 0;
      generous = false;
    }
  } while (n !== last);
  return blocks;
}

function u64(value: number, flags = 0n): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value) | flags, false);
  return b;
}

const COPIED = 1n << 63n;

/** The complete initial image: what createQcow2 writes. */
export interface Qcow2Layout {
  readonly header: ParsedHeaderCluster;
  readonly clusterSize: number;
  /** Written clusters of the image file by cluster index (all others read as zeros). */
  readonly clusters: ReadonlyMap<number, Uint8Array>;
  readonly fileLength: number;
  /** A range of the image file to preallocate (falloc) or fill with zeros (full). */
  readonly dataArea: { readonly offset: number; readonly length: number } | null;
  /** Length of the external data file, when there is one. */
  readonly dataFileLength: number;
}

/**
 * Computes the image QEMU would create for `settings`, cluster for cluster.
 *
 * @example
 * const layout = planQcow2Layout(parseCreateSettings({ size: 1 << 30, options: {} }));
 * layout.fileLength; // 0x30010, as qemu-img create -f qcow2 x 1G
 */
export function planQcow2Layout(s: Qcow2CreateSettings): Qcow2Layout {
  const cs = 2 ** s.clusterBits;
  const image = new SparseImage(cs);
  const l2EntrySize = s.extendedL2 ? 16 : 8;
  const l2Entries = cs / l2EntrySize;
  // Step 1: bare header, then a refcount table whose entry 0 points at an empty block.
  image.length = 3 * cs;
  image.write(cs, u64(2 * cs));
  const reftable = new Array<number>(cs / 8).fill(0);
  reftable[0] = 2 * cs;
  const alloc = new QemuLayoutAllocator(image, { clusterBits: s.clusterBits, refcountOrder: s.refcountOrder, reftableOffset: cs, reftable });
  // Step 2: the image is opened and its first three clusters counted.
  alloc.allocClusters(3 * cs);

  // Step 3: truncate to the virtual size: grow L1 (exact size), then preallocate.
  const l1Size = l1EntriesFor(s.size, s.clusterBits, l2EntrySize);
  const l1 = new Array<number>(l1Size).fill(0);
  let l1Offset = 0;
  if (l1Size > 0) {
    l1Offset = alloc.allocClusters(l1Size * 8);
    image.write(l1Offset, new Uint8Array(l1Size * 8));
  }
  let dataArea: Qcow2Layout['dataArea'] = null;

  const ensureL2 = (l1Index: number): number => {
    const existing = l1[l1Index] ?? 0;
    if (existing !== 0) return existing;
    const l2 = alloc.allocClusters(cs);
    image.writeZeroCluster(l2);
    l1[l1Index] = l2;
    image.write(l1Offset + l1Index * 8, u64(l2, COPIED));
    return l2;
  };
  const link = (guest: number, host: number, count: number): void => {
    const l1Index = Math.floor(guest / cs / l2Entries);
    const l2 = image.cluster(ensureL2(l1Index));
    const view = new DataView(l2.buffer, l2.byteOffset, l2.byteLength);
    const first = (guest / cs) % l2Entries;
    for (let i = 0; i < count; i++) view.setBigUint64((first + i) * l2EntrySize, BigInt(host + i * cs) | COPIED, false);
  };

  const dataFile = s.dataFile !== null;
  const preallocateMetadata = (): void => {
    // preallocate_co: qcow2_alloc_host_offset in chunks, each stopping where a
    // new L2 table breaks the contiguity of the host clusters.
    let remainingTotal = s.size;
    let guest = 0;
    let lastHost = 0;
    let lastBytes = 0;
    while (remainingTotal > 0) {
      const want = Math.min(remainingTotal, Math.floor(INT_MAX / cs) * cs);
      let start = guest;
      let remaining = want;
      let clusterOffset = -1;
      let hostOffset = -1;
      let cur = 0;
      for (;;) {
        if (hostOffset < 0 && clusterOffset >= 0) hostOffset = clusterOffset;
        start += cur;
        remaining -= cur;
        if (clusterOffset >= 0) clusterOffset += cur;
        if (remaining === 0) break;
        cur = remaining;
        ensureL2(Math.floor(start / cs / l2Entries));
        const l2Index = (start / cs) % l2Entries;
        let nb = Math.min(Math.ceil(cur / cs), l2Entries - l2Index, Math.floor(REQUEST_MAX_BYTES / cs));
        let at: number;
        if (dataFile) at = start;
        else if (clusterOffset < 0) at = alloc.allocClusters(nb * cs);
        else {
          nb = alloc.allocClustersAt(clusterOffset, nb);
          at = clusterOffset;
          if (nb === 0) {
            cur = 0;
            break;
          }
        }
        cur = Math.min(cur, nb * cs);
        if (clusterOffset < 0) clusterOffset = at;
        link(start, dataFile ? start : at, nb);
      }
      const done = want - remaining;
      lastHost = hostOffset;
      lastBytes = done;
      remainingTotal -= done;
      guest += done;
    }
    // QEMU extends the file to the end of the last allocated cluster.
    const end = lastHost + Math.ceil(lastBytes / cs) * cs;
    if (!dataFile && end > image.length) image.length = end;
  };

  if (s.preallocation === 'metadata' || (dataFile && s.preallocation !== 'off')) {
    preallocateMetadata();
  } else if (s.preallocation === 'falloc' || s.preallocation === 'full') {
    let oldFileSize = Math.ceil(image.length / cs) * cs;
    oldFileSize = (alloc.lastUsedCluster(oldFileSize) + 1) * cs;
    let dataClusters = Math.ceil(s.size / cs);
    const l2Tables = Math.ceil(dataClusters / l2Entries) + 1;
    const start = alloc.refcountArea({ start: oldFileSize, additionalClusters: dataClusters + l2Tables, exactSize: true, newBlockIndex: 0, newBlockOffset: 0 });
    alloc.allocClustersAt(start, dataClusters);
    const newFileSize = start + dataClusters * cs;
    if (newFileSize > image.length) {
      dataArea = { offset: image.length, length: newFileSize - image.length };
      image.length = newFileSize;
    }
    let host = start;
    let guest = 0;
    while (dataClusters > 0) {
      const nb = Math.min(dataClusters, l2Entries - ((guest / cs) % l2Entries));
      link(guest, host, nb);
      guest += nb * cs;
      host += nb * cs;
      dataClusters -= nb;
    }
  }

  const header: ParsedHeaderCluster = {
    header: {
      version: s.version,
      backingFileOffset: 0,
      backingFileSize: 0,
      clusterBits: s.clusterBits,
      size: s.size,
      cryptMethod: 0,
      l1Size,
      l1TableOffset: l1Offset,
      refcountTableOffset: alloc.reftableOffset,
      refcountTableClusters: alloc.reftableClusters,
      nbSnapshots: 0,
      snapshotsOffset: 0,
      incompatibleFeatures: (dataFile ? INCOMPAT_DATA_FILE : 0n) | (s.compressionType !== 0 ? INCOMPAT_COMPRESSION : 0n) | (s.extendedL2 ? INCOMPAT_EXTL2 : 0n),
      compatibleFeatures: s.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n,
      autoclearFeatures: s.dataFileRaw ? AUTOCLEAR_DATA_FILE_RAW : 0n,
      refcountOrder: s.refcountOrder,
      headerLength: s.version === 3 ? V3_HEADER_SIZE : 72,
      compressionType: s.compressionType,
    },
    extensions: { ...NO_EXTENSIONS, backingFormat: s.backingFormat, dataFile: s.dataFile },
    backingFile: s.backingFile,
    unknownHeaderFields: new Uint8Array(0),
  };
  image.write(0, serializeHeaderCluster(header, cs));
  image.length = Math.max(image.length, 3 * cs);
  return { header, clusterSize: cs, clusters: image.clusters, fileLength: image.length, dataArea, dataFileLength: s.size };
}

/**
 * Creates a qcow2 image as `qemu-img create -f qcow2` does, byte for byte.
 *
 * @example
 * await createQcow2('/tmp/a.qcow2', { size: 1 << 30, options: { cluster_size: '64k' } });
 */
export async function createQcow2(path: string, options: CreateOptions): Promise<void> {
  const settings = parseCreateSettings(options);
  const layout = planQcow2Layout(settings);
  if (settings.dataFile !== null) await createDataFile(settings.dataFile, settings);
  const host = await NodeHostFile.open(path, { create: true, truncate: true });
  try {
    await writeLayout(host, layout);
    if (layout.dataArea !== null) await preallocate(host, layout.dataArea, settings.preallocation);
    await host.sync();
  } finally {
    await host.close();
  }
}

async function writeLayout(host: HostFile, layout: Qcow2Layout): Promise<void> {
  const indexes = [...layout.clusters.keys()].sort((a, b) => a - b);
  const cs = layout.clusterSize;
  // Contiguous clusters go out in one vectored write.
  let i = 0;
  while (i < indexes.length) {
    const first = indexes[i] ?? 0;
    const run: Uint8Array[] = [];
    let next = first;
    while (i < indexes.length && indexes[i] === next && run.length < 256) {
      const c = layout.clusters.get(next);
      if (c !== undefined) run.push(c);
      next++;
      i++;
    }
    const offset = first * cs;
    const end = Math.min(offset + run.length * cs, layout.fileLength);
    const last = run.length - 1;
    const lastBuf = run[last];
    if (lastBuf !== undefined) run[last] = lastBuf.subarray(0, end - (offset + last * cs));
    await host.writev(run, offset);
  }
  await host.truncate(layout.fileLength);
}

async function preallocate(host: HostFile, area: { offset: number; length: number }, mode: Preallocation): Promise<void> {
  if (mode === 'falloc') {
    await host.allocate(area.offset, area.length);
    return;
  }
  const chunk = new Uint8Array(Math.min(area.length, 1 << 20));
  for (let pos = 0; pos < area.length; pos += chunk.length) {
    const n = Math.min(chunk.length, area.length - pos);
    await host.write(n === chunk.length ? chunk : chunk.subarray(0, n), area.offset + pos);
  }
}

async function createDataFile(path: string, s: Qcow2CreateSettings): Promise<void> {
  const host = await NodeHostFile.open(path, { create: true, truncate: true });
  try {
    await host.truncate(s.size);
    if (s.preallocation === 'falloc' || s.preallocation === 'full') await preallocate(host, { offset: 0, length: s.size }, s.preallocation);
    await host.sync();
  } finally {
    await host.close();
  }
}
