/**
 * The ploop / Parallels image driver: one image file (one delta) behind the
 * BlockDriver seam. Clusters this image does not hold read from the backing
 * (the deltas below) or as zeros; a partial write to such a cluster copies the
 * rest of the cluster from below first (COW).
 *
 * Lock order (outer to inner; never taken the other way):
 *   1. the request gate: shared for read/write/zero/discard/flush/blockStatus,
 *      exclusive for check, resize and close (which then need no other lock);
 *   2. the flush lock (one flush writes BAT pages at a time);
 *   3. one BAT page lock (page 0 also guards the header), never two at once.
 * Waiting for another request's allocation of the same cluster (`#inflight`)
 * happens with only the gate held.
 *
 * Crash-safety order: a new cluster's data is written, then its BAT entry is set
 * in memory; the BAT page reaches the disk at the next flush, after a sync that
 * makes the data durable (index after data). A crash before that leaks the
 * cluster at the end of the file, which check repairs; it never leaves an entry
 * pointing at unwritten data. Clusters are never reused, so a freed (discarded)
 * cluster can never hold another cluster's data.
 */
import { VdiskError } from '../../errors.js';
import type { HostFile, HostOpenOptions } from '../../host/host-file.js';
import { NodeHostFile } from '../../host/node-file.js';
import { AsyncLock } from '../../util/async-lock.js';
import { hex } from '../../util/int64.js';
import type {
  BackingOpenOptions,
  BackingReference,
  BackingSource,
  BlockDriver,
  CheckReport,
  FormatInfo,
  LayerExtent,
  RepairMode,
  WriteFlags,
  ZeroFlags,
} from '../driver.js';
import { rawFormat } from '../raw/index.js';
import type { DriverOpenOptions } from '../registry-types.js';
import { allocateCluster } from './allocate.js';
import { batExtents } from './block-status.js';
import { checkImage } from './check.js';
import type { DeltaRef } from './descriptor.js';
import { CLOSED_WITH_EXT_MAGIC, HEADER_SIZE, SECTOR } from './header.js';
import { batEntryOffset, batPageOf, entryToHost } from './layout.js';
import { finishOpen, readImage } from './open.js';
import { RequestGate } from './request-gate.js';
import { growImage, validateResize } from './resize.js';
import { setHeader, writeZerosAt, type PloopState } from './state.js';

export interface PloopOpenOptions extends DriverOpenOptions {
  /** Opens the image's host file (tests pass a fault-injecting or in-memory one). Deltas below use the default. */
  readonly openHost?: (path: string, options: HostOpenOptions) => Promise<HostFile>;
}

export class PloopDriver implements BlockDriver {
  readonly format = 'ploop' as const;
  readonly filename: string;
  readonly readOnly: boolean;
  readonly backingRef: BackingReference | null;
  readonly requestAlignment = SECTOR;

  readonly #s: PloopState;
  readonly #writeThrough: boolean;
  #backing: BackingSource | null = null;
  /** The deltas below this one (bottom first) when it belongs to a stack; see `openBacking`. */
  readonly #below: readonly DeltaRef[];
  readonly #gate = new RequestGate();
  readonly #flushLock = new AsyncLock();
  /** Cluster index -> allocation of that cluster in progress. */
  readonly #inflight = new Map<number, Promise<void>>();
  #closed = false;

  private constructor(s: PloopState, options: DriverOpenOptions, below: readonly DeltaRef[]) {
    this.filename = s.filename;
    this.readOnly = options.readOnly;
    this.#s = s;
    this.#writeThrough = options.cache === 'writethrough' || options.cache === 'directsync';
    this.#below = below;
    const next = below[below.length - 1];
    this.backingRef = next ? { filename: next.file, format: next.type === 'Plain' ? 'raw' : 'ploop' } : null;
  }

  /**
   * Opens a ploop image. A read-write open marks the image in use; an image left
   * in use is repaired first (as `qemu-img check -r all` would), unless
   * `noRepair` asks to leave that to an explicit check. A BAT with bad entries
   * is refused unless `noRepair` (the open `qemu-img check` does). `below` names
   * the deltas under this one in a stack (bottom first, paths resolved): the
   * block layer opens them through `openBacking` as this image's backing chain.
   *
   * @example
   *   const d = await PloopDriver.open('disk.hds', { readOnly: true });
   *   const buf = new Uint8Array(512); await d.read(0, buf); await d.close();
   */
  static async open(path: string, options: PloopOpenOptions, below: readonly DeltaRef[] = []): Promise<PloopDriver> {
    const openHost = options.openHost ?? ((p: string, o: HostOpenOptions) => NodeHostFile.open(p, o));
    const host = await openHost(path, { readOnly: options.readOnly });
    try {
      const image = await readImage(host, path);
      await finishOpen(image, options);
      return new PloopDriver(image.state, options, below);
    } catch (e) {
      await host.close().catch(() => undefined);
      throw e;
    }
  }

  get length(): number {
    return this.#s.layout.length;
  }

  /** Cluster size in bytes (qemu-img info does not print it for this format). */
  get clusterSize(): number {
    return this.#s.layout.clusterSize;
  }

  setBacking(backing: BackingSource | null): void {
    this.#backing = backing;
  }

  /**
   * Opens the delta below this one in its stack (the block layer calls this to
   * build the chain): read-only deltas each with the rest of the stack below them.
   * A delta whose cluster size differs or which is larger than this one is refused.
   */
  async openBacking(options: BackingOpenOptions): Promise<BlockDriver> {
    const next = this.#below[this.#below.length - 1];
    if (!next) throw new VdiskError('EINVAL', `'${this.filename}' has no delta below it`, { file: this.filename });
    const driverOptions: DriverOpenOptions = { ...options, readOnly: true };
    const below =
      next.type === 'Plain' ? await rawFormat.open(next.file, driverOptions) : await PloopDriver.open(next.file, driverOptions, this.#below.slice(0, -1));
    try {
      if (below instanceof PloopDriver && below.clusterSize !== this.clusterSize) {
        throw new VdiskError(
          'ECORRUPT',
          `Cannot open delta '${this.filename}': cluster size ${this.clusterSize} differs from ${below.clusterSize} of the delta below ('${next.file}')`,
          { file: this.filename, field: 'tracks' },
        );
      }
      if (below.length > this.length) {
        throw new VdiskError('ECORRUPT', `Cannot open delta '${this.filename}': it is smaller (${this.length}) than the delta below (${below.length})`, {
          file: this.filename,
          field: 'nb_sectors',
        });
      }
      return below;
    } catch (e) {
      await below.close().catch(() => undefined);
      throw e;
    }
  }

  // ---- reads -------------------------------------------------------------

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.#checkRange(offset, buf.length);
    await this.#gate.shared(() => this.#readInner(offset, buf));
  }

  async #readInner(offset: number, buf: Uint8Array): Promise<void> {
    const cs = this.#s.layout.clusterSize;
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const index = Math.floor(pos / cs);
      const host = this.#hostOf(index);
      // Extend the run over following clusters that continue it (contiguous data or all unallocated).
      let n = Math.min(cs - (pos % cs), buf.length - done);
      while (done + n < buf.length) {
        const next = this.#hostOf(index + Math.round(((pos % cs) + n) / cs));
        const contiguous = host === null ? next === null : next === host + (pos % cs) + n;
        if (!contiguous) break;
        n = Math.min(n + cs, buf.length - done);
      }
      const part = buf.subarray(done, done + n);
      if (host === null) await this.#readBelow(pos, part);
      else await this.#s.host.read(part, host + (pos % cs));
      done += n;
    }
  }

  /** Host offset of cluster `index`, or null when this image does not hold it. */
  #hostOf(index: number): number | null {
    if (index >= this.#s.layout.batEntries) return null;
    const entry = this.#s.bat.entry(index);
    if (entry === 0) return null;
    if (this.#s.badEntries.has(index)) {
      throw new VdiskError('ECORRUPT', `'${this.filename}': BAT entry ${index} is corrupt; run check -r all`, {
        file: this.filename,
        offset: batEntryOffset(index),
        field: `bat[${index}]`,
      });
    }
    return entryToHost(this.#s.layout, entry);
  }

  /** What lies below this image at `pos`: the backing's data, zeros past its end or without one. */
  async #readBelow(pos: number, out: Uint8Array): Promise<void> {
    const below = this.#backing;
    const avail = below ? Math.max(0, Math.min(out.length, below.length - pos)) : 0;
    if (below && avail > 0) await below.read(pos, out.subarray(0, avail));
    out.fill(0, avail);
  }

  // ---- writes ------------------------------------------------------------

  async write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    this.#checkWritable();
    this.#checkRange(offset, data.length);
    await this.#gate.shared(async () => {
      await this.#forEachCluster(offset, data.length, (index, inCluster, n, done) =>
        this.#writeInCluster(index, inCluster, data.subarray(done, done + n)),
      );
      if (flags?.fua === true || this.#writeThrough) await this.#flushInner();
    });
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    this.#checkWritable();
    this.#checkRange(offset, length);
    await this.#gate.shared(async () => {
      const cs = this.#s.layout.clusterSize;
      if (flags?.fastZero === true) this.#assertFastZero(offset, length);
      await this.#forEachCluster(offset, length, async (index, inCluster, n) => {
        const host = this.#hostOf(index);
        const whole = n === cs;
        if (host === null) {
          // Unallocated reads as zero already unless something shows through from below.
          if (!this.#showsBelow(index * cs + inCluster, n)) return;
          await this.#writeInCluster(index, inCluster, null, n);
          return;
        }
        if (whole && flags?.mayUnmap === true && this.#backing === null) {
          await this.#unmapCluster(index);
          return;
        }
        if (!(await this.#s.host.zeroRange(host + inCluster, n))) {
          if (flags?.fastZero === true) throw this.#noFastZero(index * cs + inCluster);
          await writeZerosAt(this.#s, host + inCluster, n);
        }
      });
      if (flags?.fua === true || this.#writeThrough) await this.#flushInner();
    });
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#checkWritable();
    this.#checkRange(offset, length);
    await this.#gate.shared(async () => {
      // The BAT has no "zero" mark: unmapping under a backing would expose the data below.
      if (this.#backing !== null) return;
      const cs = this.#s.layout.clusterSize;
      await this.#forEachCluster(offset, length, async (index, _in, n) => {
        if (n === cs) await this.#unmapCluster(index);
      });
    });
  }

  #assertFastZero(offset: number, length: number): void {
    const cs = this.#s.layout.clusterSize;
    for (let pos = offset; pos < offset + length; pos = (Math.floor(pos / cs) + 1) * cs) {
      const index = Math.floor(pos / cs);
      const n = Math.min((index + 1) * cs, offset + length) - pos;
      if (this.#hostOf(index) === null && this.#showsBelow(pos, n)) throw this.#noFastZero(pos);
    }
  }

  #noFastZero(pos: number): VdiskError {
    return new VdiskError('ENOTSUP', `'${this.filename}': cannot zero at ${hex(pos)} quickly`, { file: this.filename, offset: pos });
  }

  /** True when [pos, pos+n) of an unallocated cluster would read the backing's data. */
  #showsBelow(pos: number, n: number): boolean {
    return this.#backing !== null && pos < this.#backing.length && n > 0;
  }

  /** Calls `fn` for each cluster piece of [offset, offset+length), in order. */
  async #forEachCluster(
    offset: number,
    length: number,
    fn: (index: number, inCluster: number, n: number, done: number) => Promise<void>,
  ): Promise<void> {
    const cs = this.#s.layout.clusterSize;
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const inCluster = pos % cs;
      const n = Math.min(cs - inCluster, length - done);
      await fn(Math.floor(pos / cs), inCluster, n, done);
      done += n;
    }
  }

  /** Writes `data` (or `n` zero bytes when null) into cluster `index`, allocating it first if needed. */
  async #writeInCluster(index: number, inCluster: number, data: Uint8Array | null, n = data?.length ?? 0): Promise<void> {
    for (;;) {
      const host = this.#hostOf(index);
      if (host !== null) {
        if (data) await this.#s.host.write(data, host + inCluster);
        else await writeZerosAt(this.#s, host + inCluster, n);
        return;
      }
      const pending = this.#inflight.get(index);
      if (pending) {
        await pending;
        continue;
      }
      let finished!: () => void;
      this.#inflight.set(index, new Promise<void>((resolve) => (finished = resolve)));
      try {
        await allocateCluster(this.#s, (pos, out) => this.#readBelow(pos, out), { index, inCluster, data, n });
      } finally {
        this.#inflight.delete(index);
        finished();
      }
      return;
    }
  }

  /** Drops cluster `index` from the BAT and returns its space to the host. */
  async #unmapCluster(index: number): Promise<void> {
    const pending = this.#inflight.get(index);
    if (pending) await pending;
    const host = this.#hostOf(index);
    if (host === null) return;
    await this.#s.bat.lock(batPageOf(index)).run(async () => this.#s.bat.setEntry(index, 0));
    // If the BAT page is not yet on disk at a crash, the old entry reads zeros: still a valid discard.
    if (!(await this.#s.host.punchHole(host, this.#s.layout.clusterSize))) {
      await writeZerosAt(this.#s, host, this.#s.layout.clusterSize);
    }
  }

  // ---- flush -------------------------------------------------------------

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.#gate.shared(() => this.#flushInner());
  }

  async #flushInner(): Promise<void> {
    await this.#flushLock.run(async () => {
      // Copy the pages first: every entry in them points at data whose write has
      // completed, so one sync makes that data durable before the pages are written.
      const pages = this.#s.bat.snapshotDirty();
      await this.#s.host.sync();
      if (pages.length === 0) return;
      for (const p of pages) {
        await this.#s.bat.lock(p.page).run(() => this.#s.bat.writeSnapshot(this.#s.host, [p]));
      }
      await this.#s.host.sync();
    });
  }

  // ---- block status --------------------------------------------------------

  async blockStatus(offset: number, length: number): Promise<LayerExtent[]> {
    this.#checkRange(offset, length);
    return batExtents(this.#s, offset, length);
  }

  // ---- resize --------------------------------------------------------------

  async resize(newLength: number, options?: { readonly shrink?: boolean; readonly preallocation?: string }): Promise<void> {
    this.#checkWritable();
    validateResize(this.#s, newLength, options?.preallocation);
    if (newLength === this.length) return;
    await this.#gate.exclusive(async () => {
      await this.#flushInner();
      await growImage(this.#s, newLength);
    });
  }

  // ---- info / check ----------------------------------------------------------

  async info(): Promise<FormatInfo> {
    // qemu-img 7.2 prints no cluster size or format-specific data for parallels.
    return { format: 'ploop', virtualSize: this.length };
  }

  async check(repair: RepairMode): Promise<CheckReport> {
    if (repair !== 'none' && this.readOnly) {
      throw new VdiskError('EPERM', `Cannot repair '${this.filename}': opened read-only`, { file: this.filename });
    }
    return this.#gate.exclusive(() => checkImage(this.#s, repair));
  }

  // ---- close -----------------------------------------------------------------

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (!this.readOnly) {
        await this.#gate.exclusive(async () => {
          await this.#flushInner();
          if (this.#s.unclean || this.#s.badEntries.size > 0) return;
          setHeader(this.#s, { ...this.#s.header, inUse: this.#s.extHost !== 0 ? CLOSED_WITH_EXT_MAGIC : 0 });
          await this.#s.host.write(this.#s.bat.bytes.subarray(0, HEADER_SIZE), 0);
          await this.#s.host.sync();
          // As QEMU does: the file ends with the last cluster in use.
          if ((await this.#s.host.size()) > this.#s.dataEnd) {
            await this.#s.host.truncate(this.#s.dataEnd);
            this.#s.growth?.truncated(this.#s.dataEnd);
          }
        });
      }
    } finally {
      await this.#s.host.close();
    }
  }

  // ---- helpers ---------------------------------------------------------------

  #checkWritable(): void {
    if (this.readOnly) {
      throw new VdiskError('EPERM', `'${this.filename}' is opened read-only`, { file: this.filename });
    }
    if (this.#closed) throw new VdiskError('EINVAL', `'${this.filename}' is closed`, { file: this.filename });
    if (this.#s.badEntries.size > 0) {
      throw new VdiskError('ECORRUPT', `'${this.filename}' has corrupt BAT entries; run check -r all before writing`, {
        file: this.filename,
        field: 'bat',
      });
    }
  }

  #checkRange(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new VdiskError('ERANGE', `'${this.filename}': request ${offset}+${length} is outside the disk (size ${this.length})`, {
        file: this.filename,
        offset,
      });
    }
  }
}
