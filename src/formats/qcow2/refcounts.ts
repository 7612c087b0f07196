/**
 * The refcount allocator: the refcount table (in memory, written through) and
 * the refcount blocks (in a TableCache), allocation of clusters and of byte
 * ranges for compressed data, freeing, refcount-block allocation and
 * refcount-table growth, in QEMU's order (qcow2-refcount.c; FACTS.md 1.10, 2.3).
 *
 * Allocation follows QEMU: the lowest free run at or after a hint that moves
 * past each allocated run and drops whenever a cluster is freed, so images
 * laid out by vdisk and QEMU look alike.
 *
 * Locking: every public method that changes refcounts runs under `allocLock`
 * (one per image), except `allocRunNow`, which acts only while the lock is
 * free and finishes without an await, as if it had held it. It is the
 * innermost lock: holders of L1/L2 table locks may take it, code holding it
 * never waits for a table lock. Refcount-block cache writeback takes no lock.
 */
import { VdiskError } from '../../errors.js';
import type { HostFile } from '../../host/host-file.js';
import { AsyncLock } from '../../util/async-lock.js';
import { hex } from '../../util/int64.js';
import { addToRefcounts, getRefcount, setRefcount, zeroRefcountsFrom } from './refcount-block.js';
import { TableCache } from './table-cache.js';
import type { FileGrowth } from '../file-growth.js';

export interface RefcountsOptions {
  readonly host: HostFile;
  readonly file: string;
  readonly clusterBits: number;
  readonly refcountOrder: number;
  readonly tableOffset: number;
  readonly tableClusters: number;
  /** Blocks kept in the cache. */
  readonly cacheCapacity: number;
  /** Reserves file space ahead of new clusters (cache=none); null: clusters extend the file as they are written. */
  readonly growth?: FileGrowth | null;
}

const HEADER_REFCOUNT_TABLE_OFFSET = 48;

export class Refcounts {
  readonly cache: TableCache;
  readonly allocLock = new AsyncLock();
  readonly #host: HostFile;
  readonly #file: string;
  readonly #clusterSize: number;
  readonly #order: number;
  readonly #max: number;
  readonly #blockEntries: number;
  #tableOffset: number;
  #tableClusters: number;
  /** Refcount block offsets, 0 where no block is allocated. */
  #table: number[];
  /** The lowest cluster index that may be free (QEMU free_cluster_index). */
  #freeHint = 0;
  /**
   * Clusters freed since the last flush, with the flush epoch they were freed
   * in. They are not reused until a flush made the change that freed them
   * durable: otherwise new data could land in a cluster that an L2 entry on
   * disk still points at, and a power cut would show it at the old place.
   */
  readonly #quarantine = new Map<number, number>();
  #epoch = 0;
  /** Where the next compressed blob may go (QEMU free_byte_offset); 0 = none. */
  #freeByteOffset = 0;
  readonly #growth: FileGrowth | null;

  private constructor(options: RefcountsOptions, table: number[]) {
    this.#host = options.host;
    this.#file = options.file;
    this.#clusterSize = 2 ** options.clusterBits;
    this.#order = options.refcountOrder;
    this.#max = options.refcountOrder === 6 ? Number.MAX_SAFE_INTEGER : 2 ** (2 ** options.refcountOrder) - 1;
    this.#blockEntries = (this.#clusterSize * 8) / 2 ** options.refcountOrder;
    this.#tableOffset = options.tableOffset;
    this.#tableClusters = options.tableClusters;
    this.#table = table;
    this.#growth = options.growth ?? null;
    this.cache = new TableCache({ host: options.host, tableSize: this.#clusterSize, capacity: options.cacheCapacity });
  }

  /** Loads the refcount table. */
  static async load(options: RefcountsOptions): Promise<Refcounts> {
    const clusterSize = 2 ** options.clusterBits;
    const bytes = options.tableClusters * clusterSize;
    const fileSize = await options.host.size();
    if (options.tableOffset + bytes > fileSize) {
      throw new VdiskError(
        'ECORRUPT',
        `Cannot open '${options.file}': refcount table at ${hex(options.tableOffset)} extends past end of file (size ${hex(fileSize)})`,
        { file: options.file, offset: options.tableOffset, field: 'refcount_table_offset' },
      );
    }
    const buf = new Uint8Array(bytes);
    await options.host.read(buf, options.tableOffset);
    const view = new DataView(buf.buffer);
    const table: number[] = new Array<number>(bytes / 8);
    for (let i = 0; i < table.length; i++) {
      const hi = view.getUint32(i * 8, false);
      const lo = view.getUint32(i * 8 + 4, false);
      const value = hi * 0x1_0000_0000 + ((lo & 0xfffffe00) >>> 0);
      if ((lo & 0x1ff) !== 0 || value % clusterSize !== 0 || value > Number.MAX_SAFE_INTEGER) {
        throw new VdiskError('ECORRUPT', `Cannot open '${options.file}': refcount table entry ${i} (${hex(value)}) is invalid`, {
          file: options.file,
          offset: options.tableOffset + i * 8,
          field: 'refcount table entry',
        });
      }
      table[i] = value;
    }
    return new Refcounts(options, table);
  }

  get tableOffset(): number {
    return this.#tableOffset;
  }
  get tableClusters(): number {
    return this.#tableClusters;
  }
  get maxRefcount(): number {
    return this.#max;
  }

  /** The refcount of the cluster holding host offset `offset`. */
  async get(offset: number): Promise<number> {
    const cluster = Math.floor(offset / this.#clusterSize);
    const bi = Math.floor(cluster / this.#blockEntries);
    const blockOffset = this.#table[bi] ?? 0;
    if (blockOffset === 0) return 0;
    const t = await this.cache.acquire(blockOffset);
    try {
      return getRefcount(t.data, cluster % this.#blockEntries, this.#order);
    } finally {
      this.cache.release(t);
    }
  }

  /** Whether clusters land in space reserved ahead of them (the file may extend past the last one in use). */
  get reservesSpace(): boolean {
    return this.#growth?.reserved ?? false;
  }

  /** The end of the last cluster whose refcount is not zero (0 for none): where the image's content ends. */
  async usedEnd(): Promise<number> {
    for (let bi = this.#table.length - 1; bi >= 0; bi--) {
      const blockOffset = this.#table[bi] ?? 0;
      if (blockOffset === 0) continue;
      const t = await this.cache.acquire(blockOffset);
      try {
        for (let i = this.#blockEntries - 1; i >= 0; i--) {
          if (getRefcount(t.data, i, this.#order) !== 0) return (bi * this.#blockEntries + i + 1) * this.#clusterSize;
        }
      } finally {
        this.cache.release(t);
      }
    }
    return 0;
  }

  /** Allocates `count` contiguous clusters (refcount 1), lowest free first; returns the host offset. */
  async allocClusters(count: number): Promise<number> {
    return (await this.allocRun(count)).offset;
  }

  /**
   * As `allocClusters`, and says whether the run is fresh: past every cluster
   * the file has held since it was opened, so it reads as zeros (reserved or
   * past the end). Known only where file space is reserved ahead (cache=none);
   * false elsewhere.
   */
  async allocRun(count: number): Promise<{ readonly offset: number; readonly fresh: boolean }> {
    return this.allocLock.run(async () => {
      for (;;) {
        const start = await this.#findFreeRun(count, this.#freeHint);
        const fresh = this.#isFresh(start);
        if (!(await this.#ensureBlocks(start, count))) continue;
        await this.#addRun(start, count, 1);
        // Like QEMU's free_cluster_index, the hint moves past the run even when
        // smaller free gaps lie before it: they wait for a free to lower it.
        // (Leaving it at such a gap made every search rescan all clusters
        // allocated since: quadratic in a large convert.)
        this.#freeHint = start + count;
        return { offset: start * this.#clusterSize, fresh };
      }
    });
  }

  /**
   * `allocRun` done in this call when nothing in it has to wait: no other
   * allocation or refcount change in progress, the `count` clusters from the
   * free-cluster hint all free (so they are the run `allocRun` would find),
   * inside one refcount block that is cached, and the file's space for them
   * reserved already. Null, with nothing changed, otherwise: `allocRun` then
   * does it. A sequential stream's next cluster is placed this way, so the
   * writes into it go to the host in the call that planned them instead of a
   * few turns later (each turn a gap in the device's queue).
   */
  allocRunNow(count: number): { readonly offset: number; readonly fresh: boolean } | null {
    if (this.allocLock.locked || this.#quarantine.size !== 0 || count < 1) return null;
    const start = this.#freeHint;
    const bi = Math.floor(start / this.#blockEntries);
    if (Math.floor((start + count - 1) / this.#blockEntries) !== bi) return null;
    const blockOffset = this.#table[bi] ?? 0;
    if (blockOffset === 0) return null;
    const t = this.cache.acquireCached(blockOffset);
    if (t === null) return null;
    try {
      const base = bi * this.#blockEntries;
      if (zeroRefcountsFrom(t.data, start - base, start + count - base, this.#order) < count) return null;
      const fresh = this.#isFresh(start);
      if (this.#growth !== null && !this.#growth.ensureNow((start + count) * this.#clusterSize)) return null;
      // Free entries plus one never pass the maximum: addToRefcounts takes them all.
      addToRefcounts(t.data, start - base, start + count - base, this.#order, 1, this.#max);
      this.cache.markDirty(t);
      this.#freeHint = start + count;
      return { offset: start * this.#clusterSize, fresh };
    } finally {
      this.cache.release(t);
    }
  }

  /**
   * Whether a run from cluster `start` is past every cluster the file has held
   * since it was opened, before the run is recorded as used. Only while
   * reserving: then the file reaches past the run, and close trims to a whole cluster.
   */
  #isFresh(start: number): boolean {
    return this.#growth !== null && this.#growth.reserving && start * this.#clusterSize >= this.#growth.usedEnd;
  }

  /**
   * Allocates `size` bytes for compressed data, packed after the previous blob
   * as qcow2_alloc_bytes does; every cluster the range touches gains a reference.
   */
  async allocBytes(size: number): Promise<number> {
    return this.allocLock.run(async () => {
      let offset = this.#freeByteOffset;
      if (offset !== 0 && (await this.#getUnlocked(Math.floor(offset / this.#clusterSize))) >= this.#max) offset = 0;
      let freeInCluster = offset === 0 ? 0 : this.#clusterSize - (offset % this.#clusterSize);
      for (;;) {
        if (offset === 0 || freeInCluster < size) {
          const fresh = await this.#findFreeRun(1, this.#freeHint);
          const freshOffset = fresh * this.#clusterSize;
          const nextAligned = Math.ceil(offset / this.#clusterSize) * this.#clusterSize;
          if (offset === 0 || nextAligned !== freshOffset) {
            offset = freshOffset;
            freeInCluster = this.#clusterSize;
          } else {
            freeInCluster += this.#clusterSize;
          }
        }
        const first = Math.floor(offset / this.#clusterSize);
        const last = Math.floor((offset + size - 1) / this.#clusterSize);
        if (!(await this.#ensureBlocks(first, last - first + 1))) {
          // A new refcount block may have taken the space: search again.
          if (offset % this.#clusterSize === 0 || (await this.#getUnlocked(first)) === 0) offset = 0;
          freeInCluster = offset === 0 ? 0 : this.#clusterSize - (offset % this.#clusterSize);
          continue;
        }
        await this.#addRun(first, last - first + 1, 1);
        if (this.#freeHint >= first && this.#freeHint <= last) this.#freeHint = last + 1;
        break;
      }
      this.#freeByteOffset = (offset + size) % this.#clusterSize === 0 ? 0 : offset + size;
      return offset;
    });
  }

  /** Adds `delta` to the refcount of every cluster overlapping [offset, offset+length). */
  async update(offset: number, length: number, delta: number): Promise<void> {
    if (length <= 0) return;
    await this.allocLock.run(async () => {
      const first = Math.floor(offset / this.#clusterSize);
      const last = Math.floor((offset + length - 1) / this.#clusterSize);
      if (delta > 0 && !(await this.#ensureBlocks(first, last - first + 1))) {
        throw new VdiskError('ECORRUPT', `'${this.#file}': refcount block for referenced cluster ${hex(offset)} had to be allocated`, { file: this.#file, offset });
      }
      await this.#addRun(first, last - first + 1, delta);
    });
  }

  /** Starts a flush: clusters freed before it become reusable once it completed (`flushed`). */
  beginFlush(): number {
    return this.#epoch++;
  }

  /** The flush that `beginFlush` returned `epoch` for is on disk. */
  flushed(epoch: number): void {
    for (const [c, e] of this.#quarantine) {
      if (e > epoch) continue;
      this.#quarantine.delete(c);
      if (c < this.#freeHint) this.#freeHint = c;
    }
  }

  /**
   * Gives back `count` clusters from `offset` that `allocRun` handed out and
   * that nothing has referenced or written since (the unused end of a bulk
   * copy's run): their refcounts drop to zero and they are free again at once,
   * without the wait for a flush that freed clusters take, as no metadata on
   * the disk can point at them.
   */
  async unreserve(offset: number, count: number): Promise<void> {
    if (count <= 0) return;
    await this.allocLock.run(async () => {
      const first = offset / this.#clusterSize;
      await this.#addRun(first, count, -1);
      for (let c = first; c < first + count; c++) this.#quarantine.delete(c);
      if (first < this.#freeHint) this.#freeHint = first;
    });
  }

  /**
   * qcow2_shrink_reftable, after a shrink: refcount blocks that count no
   * cluster (a block counting itself aside) leave the refcount table, which is
   * rewritten and synced first; then each such block is forgotten, and one
   * counted elsewhere is freed. The file can then end at `usedEnd`, as QEMU's
   * does after a shrink. Returns how many blocks went.
   */
  async dropUnusedBlocks(): Promise<number> {
    return this.allocLock.run(async () => {
      const unused = new Set<number>();
      for (let bi = 0; bi < this.#table.length; bi++) {
        const blockOffset = this.#table[bi] ?? 0;
        if (blockOffset === 0) continue;
        const own = blockOffset / this.#clusterSize - bi * this.#blockEntries;
        const t = await this.cache.acquire(blockOffset);
        try {
          let empty = true;
          for (let i = 0; i < this.#blockEntries && empty; i++) empty = i === own || getRefcount(t.data, i, this.#order) === 0;
          if (empty) unused.add(bi);
        } finally {
          this.cache.release(t);
        }
      }
      if (unused.size === 0) return 0;
      const table = new Uint8Array(this.#tableClusters * this.#clusterSize);
      const view = new DataView(table.buffer);
      for (let bi = 0; bi < this.#table.length; bi++) {
        if (!unused.has(bi)) view.setBigUint64(bi * 8, BigInt(this.#table[bi] ?? 0), false);
      }
      await this.#host.write(table, this.#tableOffset);
      await this.#host.sync();
      for (const bi of unused) {
        const blockOffset = this.#table[bi] ?? 0;
        const cluster = blockOffset / this.#clusterSize;
        this.#table[bi] = 0;
        this.cache.forget(blockOffset);
        // A block counted by another one is freed there; one that counted itself went with its entry.
        const counter = Math.floor(cluster / this.#blockEntries);
        if (counter !== bi && (this.#table[counter] ?? 0) !== 0) await this.#addRun(cluster, 1, -1);
      }
      return unused.size;
    });
  }

  /** Frees (refcount −1) the clusters overlapping a range. */
  async free(offset: number, length: number): Promise<void> {
    await this.update(offset, length, -1);
  }

  async #getUnlocked(cluster: number): Promise<number> {
    return this.get(cluster * this.#clusterSize);
  }

  /** Adds `delta` to clusters [first, first+count), taking each refcount block once. */
  async #addRun(first: number, count: number, delta: number): Promise<void> {
    // Every cluster put in use passes here: reserve the file space it will be written to.
    if (delta > 0 && this.#growth !== null) await this.#growth.ensure((first + count) * this.#clusterSize);
    for (let c = first; c < first + count; ) {
      const bi = Math.floor(c / this.#blockEntries);
      const blockOffset = this.#table[bi] ?? 0;
      if (blockOffset === 0) {
        throw new VdiskError('ECORRUPT', `'${this.#file}': cluster ${hex(c * this.#clusterSize)} has no refcount block`, {
          file: this.#file,
          offset: c * this.#clusterSize,
        });
      }
      const runEnd = Math.min(first + count, (bi + 1) * this.#blockEntries);
      const t = await this.cache.acquire(blockOffset);
      try {
        if (delta > 0) {
          // No refcount drops to zero here: the entries change in one pass (the first that would overflow, if any, throws below).
          const base = bi * this.#blockEntries;
          c = base + addToRefcounts(t.data, c - base, runEnd - base, this.#order, delta, this.#max);
        }
        for (; c < runEnd; c++) this.#addIn(t.data, c, delta);
      } finally {
        // Marked even when a later cluster of the run failed: the earlier ones changed.
        this.cache.markDirty(t);
        this.cache.release(t);
      }
    }
  }

  /** Adds `delta` to the refcount of `cluster` in its (pinned) block `data`. */
  #addIn(data: Uint8Array, cluster: number, delta: number): void {
    const idx = cluster % this.#blockEntries;
    const old = getRefcount(data, idx, this.#order);
    const value = old + delta;
    if (value < 0 || value > this.#max) {
      throw new VdiskError(
        'ECORRUPT',
        `'${this.#file}': refcount of cluster ${hex(cluster * this.#clusterSize)} would become ${value} (was ${old}, max ${this.#max})`,
        { file: this.#file, offset: cluster * this.#clusterSize, field: 'refcount' },
      );
    }
    setRefcount(data, idx, this.#order, value);
    if (value === 0 && old > 0) this.#quarantine.set(cluster, this.#epoch);
    // The cluster compressed data is being packed into was freed: it may be
    // handed out as a data cluster next, so stop packing into it. (QEMU 7.2
    // keeps packing there and ends up with a refcount-2 data cluster.)
    if (value === 0 && this.#freeByteOffset !== 0 && Math.floor(this.#freeByteOffset / this.#clusterSize) === cluster) this.#freeByteOffset = 0;
  }

  /** Lowest run of `count` free clusters at or after `from` (clusters without a block are free). */
  async #findFreeRun(count: number, from: number): Promise<number> {
    let start = from;
    let run = 0;
    let c = from;
    for (;;) {
      const bi = Math.floor(c / this.#blockEntries);
      const blockOffset = this.#table[bi] ?? 0;
      if (blockOffset === 0) {
        // A whole block's range is free.
        const end = (bi + 1) * this.#blockEntries;
        if (run === 0) start = c;
        run += end - c;
        if (run >= count) return start;
        c = end;
        continue;
      }
      const t = await this.cache.acquire(blockOffset);
      try {
        const base = bi * this.#blockEntries;
        const end = base + this.#blockEntries;
        // Nothing freed waits for a flush: free runs are read whole.
        while (this.#quarantine.size === 0 && c < end) {
          const zeros = zeroRefcountsFrom(t.data, c - base, Math.min(end, c + count - run) - base, this.#order);
          if (zeros === 0) {
            // Entries in use are stepped over one by one: a native compare for each would cost more.
            run = 0;
            while (c < end && getRefcount(t.data, c - base, this.#order) !== 0) c++;
            continue;
          }
          if (run === 0) start = c;
          run += zeros;
          c += zeros;
          if (run >= count) return start;
        }
        for (; c < end; c++) {
          if (getRefcount(t.data, c % this.#blockEntries, this.#order) === 0 && !this.#quarantine.has(c)) {
            if (run === 0) start = c;
            run++;
            if (run >= count) return start;
          } else {
            run = 0;
          }
        }
      } finally {
        this.cache.release(t);
      }
    }
  }

  /**
   * Makes sure refcount blocks cover clusters [first, first+count). Returns false
   * when it had to allocate (the caller searches again: the new metadata may
   * occupy the clusters it wanted).
   */
  async #ensureBlocks(first: number, count: number): Promise<boolean> {
    const firstBlock = Math.floor(first / this.#blockEntries);
    const lastBlock = Math.floor((first + count - 1) / this.#blockEntries);
    let complete = true;
    for (let bi = firstBlock; bi <= lastBlock; bi++) {
      if ((this.#table[bi] ?? 0) !== 0) continue;
      complete = false;
      if (bi >= this.#table.length) {
        await this.#growTable(lastBlock);
        return false;
      }
      await this.#allocBlock(bi);
    }
    return complete;
  }

  /** Allocates refcount block `bi` (alloc_refcount_block). */
  async #allocBlock(bi: number): Promise<void> {
    // The block goes to the lowest free cluster; if that cluster is described by the
    // new block itself, the block counts its own reference.
    const where = await this.#findFreeRun(1, this.#freeHint);
    const whereBlock = Math.floor(where / this.#blockEntries);
    const blockOffset = where * this.#clusterSize;
    const t = await this.cache.acquire(blockOffset, true);
    try {
      if (whereBlock === bi) {
        setRefcount(t.data, where % this.#blockEntries, this.#order, 1);
      } else {
        if (!(await this.#ensureBlocks(where, 1))) {
          // Placing the block's own refcount block moved things: retry from scratch.
          this.cache.forget(blockOffset);
          await this.#allocBlock(bi);
          return;
        }
        await this.#addRun(where, 1, 1);
        await this.cache.flushWithDependencies();
      }
      this.cache.markDirty(t);
      await this.cache.flushWithDependencies();
    } finally {
      this.cache.release(t);
    }
    await this.#writeTableEntry(bi, blockOffset);
    this.#table[bi] = blockOffset;
  }

  async #writeTableEntry(bi: number, blockOffset: number): Promise<void> {
    const buf = new Uint8Array(8);
    new DataView(buf.buffer).setBigUint64(0, BigInt(blockOffset), false);
    await this.#host.write(buf, this.#tableOffset + bi * 8);
    await this.#host.sync();
  }

  /**
   * Grows the refcount table so it has an entry for block `needBlock`
   * (qcow2_refcount_area): new blocks and a new table are laid out at the end of
   * the covered range, describing themselves; the header switch is the atomic step.
   */
  async #growTable(needBlock: number): Promise<void> {
    const oldEntries = this.#table.length;
    // The new area goes after the clusters in use, not after space merely reserved for them.
    const fileEnd = this.#growth !== null ? this.#growth.usedEnd : await this.#host.size();
    const fileClusters = Math.ceil(fileEnd / this.#clusterSize);
    const start = Math.max(oldEntries * this.#blockEntries, fileClusters);
    let blocks = 0;
    let tableClusters = 0;
    let entries = 0;
    // Iterate to a fixed point: the new area must be covered by its own blocks.
    for (let i = 0; i < 64; i++) {
      const areaEnd = start + blocks + tableClusters;
      const lastBlock = Math.max(needBlock, Math.floor((areaEnd - 1) / this.#blockEntries));
      entries = Math.ceil(((lastBlock + 1) * 3) / 2);
      const newTableClusters = Math.ceil((entries * 8) / this.#clusterSize);
      const firstNewBlock = Math.floor(start / this.#blockEntries);
      const newBlocks = Math.floor((start + blocks + newTableClusters - 1) / this.#blockEntries) - firstNewBlock + 1;
      if (newBlocks === blocks && newTableClusters === tableClusters) break;
      blocks = newBlocks;
      tableClusters = newTableClusters;
    }
    if (tableClusters * this.#clusterSize > 8 * 1024 * 1024) {
      throw new VdiskError('EFBIG', `'${this.#file}': refcount table would exceed 8 MiB`, { file: this.#file, field: 'refcount_table_clusters' });
    }
    entries = (tableClusters * this.#clusterSize) / 8;
    const firstNewBlock = Math.floor(start / this.#blockEntries);
    const newTable = this.#table.slice();
    while (newTable.length < entries) newTable.push(0);
    const areaEnd = start + blocks + tableClusters;
    if (this.#growth !== null) await this.#growth.ensure(areaEnd * this.#clusterSize);
    // Write the new blocks, each counting the area clusters it covers.
    for (let k = 0; k < blocks; k++) {
      const bi = firstNewBlock + k;
      const blockCluster = start + k;
      const buf = new Uint8Array(this.#clusterSize);
      const lo = Math.max(start, bi * this.#blockEntries);
      const hi = Math.min(areaEnd, (bi + 1) * this.#blockEntries);
      for (let c = lo; c < hi; c++) setRefcount(buf, c % this.#blockEntries, this.#order, 1);
      await this.#host.write(buf, blockCluster * this.#clusterSize);
      newTable[bi] = blockCluster * this.#clusterSize;
    }
    const tableBuf = new Uint8Array(tableClusters * this.#clusterSize);
    const view = new DataView(tableBuf.buffer);
    newTable.forEach((off, i) => view.setBigUint64(i * 8, BigInt(off), false));
    const newTableOffset = (start + blocks) * this.#clusterSize;
    await this.cache.flushWithDependencies();
    await this.#host.write(tableBuf, newTableOffset);
    await this.#host.sync();
    const hdr = new Uint8Array(12);
    const hv = new DataView(hdr.buffer);
    hv.setBigUint64(0, BigInt(newTableOffset), false);
    hv.setUint32(8, tableClusters, false);
    await this.#host.write(hdr, HEADER_REFCOUNT_TABLE_OFFSET);
    await this.#host.sync();
    const oldOffset = this.#tableOffset;
    const oldClusters = this.#tableClusters;
    this.#table = newTable;
    this.#tableOffset = newTableOffset;
    this.#tableClusters = tableClusters;
    await this.#addRun(oldOffset / this.#clusterSize, oldClusters, -1);
  }
}
