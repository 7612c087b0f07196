/**
 * The qcow2 BlockDriver: opening (header, L1, refcounts, codec, data file),
 * the request entry points, resize, flush and close. The mapping and
 * allocation work lives in read-path.ts, write-path.ts and zero-discard.ts;
 * the lock order is written down in image.ts.
 */
import * as path from 'node:path';
import { VdiskError } from '../../errors.js';
import type { HostFile, HostOpenOptions, HostRange } from '../../host/host-file.js';
import type { Bytes } from '../../host/host-range.js';
import { NodeHostFile } from '../../host/node-file.js';
import { DirectHostFile } from '../../host/direct-file.js';
import { AsyncLock } from '../../util/async-lock.js';
import { hex } from '../../util/int64.js';
import type {
  BackingReference,
  BackingSource,
  BlockDriver,
  CheckReport,
  FormatInfo,
  FormatName,
  GuestCopyRun,
  HostExtent,
  JsonValue,
  LayerExtent,
  ProgressCallback,
  RepairMode,
  WriteFlags,
  ZeroFlags,
} from '../driver.js';
import type { DriverOpenOptions } from '../registry-types.js';
import { ClusterCodec } from './compression.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  AUTOCLEAR_KNOWN,
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_ZSTD,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  hasDataFile,
  hasExtendedL2,
  l1EntriesFor,
  parseHeaderCluster,
  readHeaderCluster,
  type ParsedHeaderCluster,
} from './header.js';
import type { Qcow2Image } from './image.js';
import { InflightTable, type InflightStats } from './inflight.js';
import { cachePolicy, withoutSync, type CachePolicy } from '../cache-mode.js';
import { FileGrowth } from '../file-growth.js';
import type { Qcow2MetaContext } from './meta-context.js';
import { Qcow2SnapshotOps, describeSnapshot, loadSnapshots } from './snapshot-ops.js';
import { Qcow2BitmapOps } from './bitmap-ops.js';
import { hostExtentOf, layerStatus, plainHostOffsetNow, readGuest } from './read-path.js';
import { Refcounts } from './refcounts.js';
import { TableCache } from './table-cache.js';
import { writeGuest } from './write-path.js';
import { writeRunsInBulk } from './bulk-write.js';
import { discardGuest, writeCompressedCluster, zeroGuest } from './zero-discard.js';
import { applyTuning } from './runtime-options.js';
import { dropMappingsPast, growL1, trimAfterShrink } from './l1-resize.js';

const DEFAULT_L2_CACHE_BYTES = 8 * 1024 * 1024;
const DEFAULT_REFCOUNT_CACHE_BYTES = 2 * 1024 * 1024;
/**
 * Space reserved past the last cluster with cache=none/directsync (see file-growth.ts):
 * one file extension, and so one wait for all direct I/O in flight, per 32 MiB of new
 * clusters instead of one per allocating write. Trimmed at close.
 */
const DIRECT_PREALLOC_BYTES = 32 * 1024 * 1024;
const HEADER_SIZE_FIELD = 24;
const HEADER_INCOMPAT = 72;
const HEADER_AUTOCLEAR = 88;
const FORMAT_NAMES: readonly FormatName[] = ['raw', 'qcow2', 'ploop'];

/** Called on a read-write open of a dirty image, and by check(); provided by check.ts. */
export type Qcow2Checker = (file: string, options: { readonly repair: RepairMode }) => Promise<CheckReport>;

export interface Qcow2OpenOptions extends DriverOpenOptions {
  /** The refcount checker/repairer (check.ts), injected to keep modules small. */
  readonly checker?: Qcow2Checker;
  /** Opens the image's host files (tests pass a fault-injecting or in-memory one). */
  readonly openHost?: (path: string, options: HostOpenOptions) => Promise<HostFile>;
}

export class Qcow2Driver implements BlockDriver {
  readonly format = 'qcow2' as const;
  readonly filename: string;
  readonly readOnly: boolean;
  /** Changed only by changeBackingFile (rebase). */
  backingRef: BackingReference | null;
  readonly requestAlignment = 1;
  readonly #img: Qcow2Image;
  #parsed: ParsedHeaderCluster;
  readonly #checker: Qcow2Checker | undefined;
  /** Owed before the first change of guest data: unknown autoclear bits cleared, bitmaps tracking writes. */
  #headerPrepared = false;
  #closed = false;
  /** The image file's size at open: close never trims below it. */
  readonly #sizeAtOpen: number;
  #corrupt = false;
  /** Set after check() repaired the file: the caches no longer describe it; reopen to use it. */
  #stale = false;
  /** The first header update, while it runs. */
  #headerPreparing: Promise<void> | null = null;
  /** cache=writethrough/directsync: every change is flushed before it completes. */
  readonly #flushEachWrite: boolean;
  /** What the snapshot, bitmap and amend modules may use of this driver's state. */
  readonly #meta: Qcow2MetaContext;
  readonly snapshots: Qcow2SnapshotOps;
  readonly bitmaps: Qcow2BitmapOps;

  private constructor(
    img: Qcow2Image,
    parsed: ParsedHeaderCluster,
    opts: { readOnly: boolean; checker: Qcow2Checker | undefined; policy?: CachePolicy; sizeAtOpen?: number },
  ) {
    this.#sizeAtOpen = opts.sizeAtOpen ?? 0;
    this.#img = img;
    this.#flushEachWrite = opts.policy?.flushEachWrite ?? false;
    this.#parsed = parsed;
    this.filename = img.file;
    this.readOnly = opts.readOnly;
    this.#checker = opts.checker;
    const backingFile = parsed.backingFile;
    const fmt = parsed.extensions.backingFormat;
    this.backingRef =
      backingFile === null ? null : { filename: backingFile, format: fmt !== null && (FORMAT_NAMES as readonly string[]).includes(fmt) ? (fmt as FormatName) : null };
    this.#meta = {
      img,
      parsed: () => this.#parsed,
      setParsed: (p) => {
        this.#parsed = p;
      },
      beginChange: async () => {
        this.#checkWritable();
        this.#checkRange(0, 0);
        await this.#clearUnknownAutoclear();
      },
      flush: () => this.flush(),
      resize: (n) => this.resize(n, { shrink: true }),
    };
    this.snapshots = new Qcow2SnapshotOps(this.#meta);
    this.bitmaps = new Qcow2BitmapOps(this.#meta);
  }

  /** Opens an image. A dirty image opened read-write is repaired first, as QEMU does. */
  static async open(file: string, options: Qcow2OpenOptions): Promise<Qcow2Driver> {
    const openHost = options.openHost ?? ((p: string, o: HostOpenOptions) => (o.direct ? DirectHostFile.openDirect(p, o) : NodeHostFile.open(p, o)));
    const policy = cachePolicy(options.cache);
    const openData = async (p: string): Promise<HostFile> => {
      const h = await openHost(p, { readOnly: options.readOnly, ...(policy.direct ? { direct: true } : { inlineIo: options.inlineIo ?? false }) });
      return policy.syncOnFlush ? h : withoutSync(h);
    };
    let parsed = await Qcow2Driver.#readHeader(file, openHost);
    const h0 = parsed.header;
    if (!options.readOnly && (h0.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) {
      throw new VdiskError('EPERM', `Cannot open '${file}' read-write: the image is marked corrupt (run 'qemu-img check -r all')`, {
        file,
        offset: HEADER_INCOMPAT,
        field: 'incompatible_features',
      });
    }
    // Runtime options first, as QEMU reads them before it touches the image.
    const tuned = options.qcow2Tuning === undefined ? {} : applyTuning(file, options.qcow2Tuning, h0, options.readOnly);
    const l2CacheBytes = tuned.l2CacheSize ?? DEFAULT_L2_CACHE_BYTES;
    const refcountCacheBytes = tuned.refcountCacheSize ?? DEFAULT_REFCOUNT_CACHE_BYTES;
    if (!options.readOnly && !options.noRepair && (h0.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
      if (!options.checker) {
        throw new VdiskError('ENOTSUP', `Cannot open '${file}' read-write: the dirty bit is set and no refcount repair is available`, { file, field: 'incompatible_features' });
      }
      const report = await options.checker(file, { repair: 'all' });
      if (report.corruptions - report.corruptionsFixed > 0 || report.checkErrors > 0) {
        throw new VdiskError('ECORRUPT', `Cannot open '${file}': repairing the dirty image failed`, { file });
      }
      parsed = await Qcow2Driver.#readHeader(file, openHost);
    }
    const h = parsed.header;
    if (h.cryptMethod !== 0) throw new VdiskError('ENOTSUP', `Cannot open '${file}': encrypted images are not supported`, { file, offset: 32, field: 'crypt_method' });
    const host = await openData(file);
    let dataHost: HostFile = host;
    try {
      if (hasDataFile(h)) {
        const name = parsed.extensions.dataFile;
        if (name === null) throw new VdiskError('EINVAL', `Cannot open '${file}': the image needs an external data file but names none`, { file, field: 'data_file' });
        dataHost = await openData(path.resolve(path.dirname(file), name));
      }
      const clusterSize = 2 ** h.clusterBits;
      const extendedL2 = hasExtendedL2(h);
      const entrySize = extendedL2 ? 16 : 8;
      const fileSize = await host.size();
      const l1Bytes = h.l1Size * 8;
      if (h.l1Size > 0 && h.l1TableOffset + l1Bytes > fileSize) {
        throw new VdiskError('ECORRUPT', `Cannot open '${file}': L1 table at ${hex(h.l1TableOffset)} extends past end of file (size ${hex(fileSize)})`, {
          file,
          offset: h.l1TableOffset,
          field: 'l1_table_offset',
        });
      }
      const l1 = new Uint8Array(l1Bytes);
      if (l1Bytes > 0) await host.read(l1, h.l1TableOffset);
      const refcounts = await Refcounts.load({
        host,
        file,
        clusterBits: h.clusterBits,
        refcountOrder: h.refcountOrder,
        tableOffset: h.refcountTableOffset,
        tableClusters: h.refcountTableClusters,
        cacheCapacity: Math.max(4, Math.floor(refcountCacheBytes / clusterSize)),
        growth: policy.direct && !options.readOnly ? new FileGrowth(host, fileSize, clusterSize, DIRECT_PREALLOC_BYTES) : null,
      });
      const img: Qcow2Image = {
        file,
        host,
        dataHost,
        geometry: { clusterBits: h.clusterBits, extendedL2, externalDataFile: hasDataFile(h) },
        clusterBits: h.clusterBits,
        clusterSize,
        l2Entries: clusterSize / entrySize,
        subclusters: extendedL2 ? 32 : 1,
        version: h.version,
        dataFileRaw: (h.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n,
        size: h.size,
        l1,
        l1Offset: h.l1TableOffset,
        l1Lock: new AsyncLock(),
        l2Cache: new TableCache({ host, tableSize: clusterSize, capacity: Math.max(4, Math.floor(l2CacheBytes / clusterSize)) }),
        refcounts,
        codec: await ClusterCodec.create(h.compressionType === COMPRESSION_ZSTD ? 'zstd' : 'deflate', clusterSize),
        backing: null,
        slotLocks: new Map(),
        inflight: new InflightTable(),
      };
      return new Qcow2Driver(img, parsed, { readOnly: options.readOnly, checker: options.checker, policy, sizeAtOpen: fileSize });
    } catch (e) {
      if (dataHost !== host) await dataHost.close();
      await host.close();
      throw e;
    }
  }

  static async #readHeader(file: string, openHost: NonNullable<Qcow2OpenOptions['openHost']>): Promise<ParsedHeaderCluster> {
    const host = await openHost(file, { readOnly: true });
    try {
      return parseHeaderCluster(await readHeaderCluster(host), { file, fileSize: await host.size() });
    } finally {
      await host.close();
    }
  }

  get length(): number {
    return this.#img.size;
  }

  setBacking(backing: BackingSource | null): void {
    this.#img.backing = backing;
  }

  read(offset: number, buf: Uint8Array): Promise<void> {
    try {
      this.#checkRange(offset, buf.length);
    } catch (e) {
      return Promise.reject(e);
    }
    return readGuest(this.#img, offset, buf);
  }

  write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    // The common write (header already marked, no FUA, no flush after it): straight into the write path.
    if (this.#headerPrepared && this.#headerPreparing === null && flags?.fua !== true && !this.#flushEachWrite) {
      try {
        this.#checkWritable();
        this.#checkRange(offset, data.length);
      } catch (e) {
        return Promise.reject(e);
      }
      this.bitmaps.markDirty(offset, data.length);
      return writeGuest(this.#img, offset, data).catch(this.#onWriteFailed);
    }
    return this.#writeBytes(offset, data, flags);
  }

  async hostExtent(offset: number, length: number): Promise<HostExtent> {
    this.#checkRange(offset, length);
    return hostExtentOf(this.#img, offset, length);
  }

  hostRangeNow(offset: number, length: number): HostRange | null {
    if (offset < 0 || length <= 0 || offset + length > this.#img.size) return null;
    let host: number;
    try {
      host = plainHostOffsetNow(this.#img, offset, length);
    } catch {
      return null; // a corrupt entry: `read` reports it
    }
    return host < 0 ? null : { file: this.#img.dataHost, offset: host, length };
  }

  async writeFromHost(offset: number, src: HostRange, flags?: WriteFlags): Promise<boolean> {
    if (!this.#img.dataHost.canCopyFrom?.(src.file)) return false;
    await this.#writeBytes(offset, src, flags);
    return true;
  }

  async writeRunsFromHost(runs: readonly GuestCopyRun[], zeroBlock: number): Promise<number | null> {
    if (this.#flushEachWrite) return null;
    this.#checkWritable();
    for (const r of runs) this.#checkRange(r.offset, r.src.length);
    await this.#prepareHeader();
    if (this.bitmaps.tracking) for (const r of runs) this.bitmaps.markDirty(r.offset, r.src.length);
    let written: number | null = null;
    await this.#guard(async () => {
      written = await writeRunsInBulk(this.#img, runs, zeroBlock);
    });
    return written;
  }

  async #writeBytes(offset: number, data: Bytes, flags: WriteFlags | undefined): Promise<void> {
    this.#checkWritable();
    this.#checkRange(offset, data.length);
    // Requests keep their arrival order through the first header update (sequential
    // streams rely on it for COW cancellation).
    if (!this.#headerPrepared || this.#headerPreparing) await this.#prepareHeader();
    this.bitmaps.markDirty(offset, data.length);
    await this.#guard(() => writeGuest(this.#img, offset, data));
    if (flags?.fua || this.#flushEachWrite) await this.flush();
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    this.#checkWritable();
    this.#checkRange(offset, length);
    await this.#prepareHeader();
    this.bitmaps.markDirty(offset, length);
    await this.#guard(async () => {
      await zeroGuest(this.#img, offset, length, { mayUnmap: flags?.mayUnmap ?? false });
    });
    if (flags?.fua || this.#flushEachWrite) await this.flush();
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#checkWritable();
    this.#checkRange(offset, length);
    await this.#prepareHeader();
    this.bitmaps.markDirty(offset, length);
    await this.#guard(async () => {
      await discardGuest(this.#img, offset, length);
    });
    if (this.#flushEachWrite) await this.flush();
  }

  /**
   * Drops every cluster mapping so the image reads through to its backing
   * (qemu-img commit's bdrv_make_empty). Like QEMU's, it marks no bitmap dirty.
   */
  async makeEmpty(): Promise<void> {
    this.#checkWritable();
    await this.#prepareHeader();
    await this.#guard(async () => {
      await discardGuest(this.#img, 0, this.length, true);
    });
  }

  async writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    this.#checkWritable();
    this.#checkRange(offset, data.length);
    await this.#prepareHeader();
    this.bitmaps.markDirty(offset, data.length);
    await this.#guard(async () => {
      await writeCompressedCluster(this.#img, offset, data);
    });
  }

  /** Writes dirty tables in dependency order (refcounts before L2), then syncs. */
  async flush(): Promise<void> {
    if (this.readOnly) return;
    const img = this.#img;
    // Link every allocation in flight; an error of a write that had already completed is reported here.
    await img.inflight.settleAll();
    const lost = img.inflight.takeError();
    if (lost !== null) throw lost;
    const epoch = img.refcounts.beginFlush();
    await img.l2Cache.writeDirty();
    await img.refcounts.cache.writeDirty();
    await img.l2Cache.writeDirty();
    await img.host.sync();
    if (img.dataHost !== img.host) await img.dataHost.sync();
    img.refcounts.flushed(epoch);
  }

  /** Counters of the in-flight allocation machinery (COW cancellations and waits). */
  stats(): InflightStats {
    return { ...this.#img.inflight.stats };
  }

  async blockStatus(offset: number, length: number): Promise<LayerExtent[]> {
    this.#checkRange(offset, length);
    if (length === 0) return [];
    return layerStatus(this.#img, offset, length);
  }

  async resize(newLength: number, options?: { readonly shrink?: boolean; readonly preallocation?: string }): Promise<void> {
    this.#checkWritable();
    const img = this.#img;
    if (newLength % 512 !== 0 || newLength < 0) throw new VdiskError('EINVAL', `'${img.file}': new size ${newLength} is not a multiple of 512`, { file: img.file });
    // A v2 snapshot need not record its disk size, so applying it after a resize could not restore it (QEMU refuses too).
    if (this.#parsed.header.nbSnapshots > 0 && img.version < 3) {
      throw new VdiskError('ENOTSUP', "Can't resize a v2 image which has snapshots", { file: img.file, field: 'nb_snapshots' });
    }
    await this.#prepareHeader();
    await this.bitmaps.assertResizable();
    if (newLength < img.size) {
      if (!options?.shrink) throw new VdiskError('EINVAL', `'${img.file}': shrinking needs the shrink option`, { file: img.file });
      await dropMappingsPast(img, newLength, () => this.flush());
    } else {
      const needed = l1EntriesFor(newLength, img.clusterBits, img.geometry.extendedL2 ? 16 : 8);
      if (needed > img.l1.length / 8) {
        await growL1(img, needed);
        this.#parsed = { ...this.#parsed, header: { ...this.#parsed.header, l1Size: needed, l1TableOffset: img.l1Offset } };
      }
    }
    const buf = new Uint8Array(8);
    new DataView(buf.buffer).setBigUint64(0, BigInt(newLength), false);
    await this.flush();
    if (newLength < img.size) await trimAfterShrink(img, () => this.flush());
    await img.host.write(buf, HEADER_SIZE_FIELD);
    await img.host.sync();
    img.size = newLength;
    this.#parsed = { ...this.#parsed, header: { ...this.#parsed.header, size: newLength } };
    this.bitmaps.resized(newLength);
  }

  /** Rewrites the backing reference in the header (qemu-img rebase); see backing-change.ts. */
  async changeBackingFile(ref: BackingReference | null): Promise<void> {
    // Loaded on first use (as amend.js): every module loaded costs each command's start.
    const { changeBackingQcow2 } = await import('./backing-change.js');
    await changeBackingQcow2(this.#meta, ref);
    this.backingRef = ref;
  }

  async info(): Promise<FormatInfo> {
    const h = this.#parsed.header;
    const img = this.#img;
    const data: { [key: string]: JsonValue } = {
      compat: h.version === 2 ? '0.10' : '1.1',
    };
    // QEMU prints only compat, compression type and refcount bits for v2 images.
    data['compression-type'] = h.compressionType === COMPRESSION_ZSTD ? 'zstd' : 'zlib';
    data['refcount-bits'] = 2 ** h.refcountOrder;
    if (h.version === 3) {
      const bitmaps = await this.bitmaps.list();
      if (bitmaps.length > 0) data['bitmaps'] = bitmaps.map((b) => ({ flags: [...b.flags], name: b.name, granularity: b.granularity }));
      data['lazy-refcounts'] = (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
      data['corrupt'] = (h.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
      data['extended-l2'] = img.geometry.extendedL2;
    }
    if (this.#parsed.extensions.dataFile !== null) {
      data['data-file'] = this.#parsed.extensions.dataFile;
      data['data-file-raw'] = img.dataFileRaw;
    }
    return {
      format: 'qcow2',
      virtualSize: img.size,
      clusterSize: img.clusterSize,
      dirtyFlag: (h.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
      encrypted: h.cryptMethod !== 0,
      ...(this.backingRef ? { backing: this.backingRef } : {}),
      ...(h.nbSnapshots > 0 ? { snapshots: (await loadSnapshots(this.#meta)).snapshots.map(describeSnapshot) } : {}),
      formatSpecific: { type: 'qcow2', data },
    };
  }

  /** qemu-img amend (amend.ts); after a refcount-width change or a downgrade, reopen before further I/O. */
  async amend(options: Readonly<Record<string, string>>, progress?: ProgressCallback): Promise<void> {
    const { amendQcow2 } = await import('./amend.js');
    await amendQcow2(this.#meta, options, {
      progress,
      bitmaps: this.bitmaps,
      resize: this.#meta.resize,
      invalidate: () => {
        this.#stale = true;
      },
    });
  }

  async check(repair: RepairMode): Promise<CheckReport> {
    if (!this.#checker) throw new VdiskError('ENOTSUP', `'${this.filename}': no qcow2 checker is available`, { file: this.filename });
    await this.flush();
    const report = await this.#checker(this.filename, { repair });
    // A repair rewrote metadata behind this driver's caches: it must not do I/O on them again.
    if (report.corruptionsFixed > 0 || report.leaksFixed > 0) this.#stale = true;
    return report;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.flush();
      // A repaired (stale) image keeps its bitmaps in use: this driver's view of the file is gone.
      if (!this.#stale) await this.bitmaps.saveTracked();
      await this.#trimReserved();
    } finally {
      if (this.#img.dataHost !== this.#img.host) await this.#img.dataHost.close();
      await this.#img.host.close();
    }
  }

  /** Drops the space reserved past the last cluster in use (cache=none growth), so the file ends where QEMU's would. */
  async #trimReserved(): Promise<void> {
    if (!this.#img.refcounts.reservesSpace || this.#stale) return;
    const end = Math.max(this.#sizeAtOpen, await this.#img.refcounts.usedEnd());
    if ((await this.#img.host.size()) > end) await this.#img.host.truncate(end);
  }

  /**
   * Before the first change of guest data or size: unknown autoclear bits
   * cleared, persistent bitmaps loaded and tracking writes (bitmap-ops.ts).
   * Concurrent first requests share one preparation and keep their order.
   */
  #prepareHeader(): Promise<void> {
    if (this.#headerPrepared) return Promise.resolve();
    this.#headerPreparing ??= (async () => {
      await this.#clearUnknownAutoclear();
      await this.bitmaps.track();
      this.#headerPrepared = true;
    })().finally(() => {
      this.#headerPreparing = null;
    });
    return this.#headerPreparing;
  }

  /** Clears the autoclear bits vdisk does not maintain (qcow2.txt: a writer must, before its first change). */
  async #clearUnknownAutoclear(): Promise<void> {
    const h = this.#parsed.header;
    if (h.version < 3) return;
    const keep = h.autoclearFeatures & AUTOCLEAR_KNOWN;
    if (keep === h.autoclearFeatures) return;
    const buf = new Uint8Array(8);
    new DataView(buf.buffer).setBigUint64(0, keep, false);
    await this.#img.host.write(buf, HEADER_AUTOCLEAR);
    await this.#img.host.sync();
    this.#parsed = { ...this.#parsed, header: { ...h, autoclearFeatures: keep } };
  }

  /**
   * Runs a modifying operation; an inconsistency found on the way marks the image
   * corrupt on disk (QEMU qcow2_signal_corruption) and stops further writes.
   */
  async #guard(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      await this.#failed(e);
    }
  }

  /** #failed for the common write's rejection: one function per driver, not a closure per request. */
  readonly #onWriteFailed = (e: unknown): Promise<never> => this.#failed(e);

  /** Rethrows a request's error; a corruption found on the way is first marked in the header (qemu's "marking image as corrupt"). */
  async #failed(e: unknown): Promise<never> {
    if (e instanceof VdiskError && e.code === 'ECORRUPT' && !this.#corrupt) {
      this.#corrupt = true;
      const h = this.#parsed.header;
      if (h.version === 3) {
        const bits = h.incompatibleFeatures | INCOMPAT_CORRUPT;
        const buf = new Uint8Array(8);
        new DataView(buf.buffer).setBigUint64(0, bits, false);
        await this.#img.host.write(buf, HEADER_INCOMPAT);
        await this.#img.host.sync();
        this.#parsed = { ...this.#parsed, header: { ...h, incompatibleFeatures: bits } };
      }
    }
    throw e;
  }

  #checkWritable(): void {
    if (this.#corrupt) throw new VdiskError('EPERM', `'${this.filename}' is marked corrupt; writes are refused`, { file: this.filename });
    if (this.readOnly) throw new VdiskError('EPERM', `'${this.filename}' is opened read-only`, { file: this.filename });
    if (this.#closed) throw new VdiskError('EINVAL', `'${this.filename}' is closed`, { file: this.filename });
  }

  #checkRange(offset: number, length: number): void {
    if (this.#stale) {
      throw new VdiskError('EIO', `'${this.filename}' was repaired by check; reopen it before further I/O`, { file: this.filename });
    }
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.#img.size) {
      throw new VdiskError('ERANGE', `'${this.filename}': request [${offset}, +${length}) lies outside the disk (size ${this.#img.size})`, {
        file: this.filename,
        offset,
      });
    }
  }
}
