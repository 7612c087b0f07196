/**
 * QEMU's cluster allocator replayed in memory, so that a planned image places
 * every refcount block, refcount table and L1/L2 table where qemu-img would.
 * Kept apart from the planner because it is the one piece that mirrors
 * qcow2-refcount.c step for step and is also used to size refcount metadata.
 */
import { VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import { MAX_REFCOUNT_TABLE_BYTES } from './header.js';
import { getRefcount, refcountBlockEntries, setRefcount } from './refcount-block.js';

/** A sparse file in memory: written clusters plus the length the writes reached. */
export class SparseImage {
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
export const REQUEST_MAX_BYTES = 0x7fffffff - 511;
export const INT_MAX = 0x7fffffff;

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


/** A big-endian 64-bit table entry: `value` with `flags` (such as QCOW_OFLAG_COPIED) or-ed in. */
export function u64(value: number, flags = 0n): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(value) | flags, false);
  return b;
}
