/**
 * BlockNode: one opened image with the nodes below it. It is the ImageNode the
 * CLI, the NBD server and the jobs use, and the BackingSource the overlay's
 * driver reads through. It checks every request (range, read-only) before the
 * driver sees it, and walks the chain for block status and seeking.
 */
import { VdiskError } from '../errors.js';
import type { BackingSource, BlockDriver, FormatName } from '../formats/driver.js';
import { ImageLock, closingWithLock, imageLockRequest } from '../host/image-lock.js';
import { readHostRange } from '../host/host-range.js';
import { formatByName, probeFormat } from '../formats/registry.js';
import { mergeChainStatus, type StatusLayer } from './chain-status.js';
import { checkRequest, checkSize } from './request.js';
import { RequestTracker, type RequestTicket } from './request-tracker.js';
import { seekChain } from './seek.js';
import type {
  BitmapOps,
  ChainExtent,
  CheckReport,
  FormatInfo,
  GuestCopyRun,
  HostRange,
  HostSink,
  ImageNode,
  LayerExtent,
  ProgressCallback,
  RepairMode,
  SnapshotOps,
  WriteFlags,
  ZeroFlags,
} from './types.js';

/** How many bytes at the start of a probed raw image are guarded against format-changing writes. */
const PROBE_GUARD = 512;

export interface BlockNodeOptions {
  /** The node below, already opened (it becomes the driver's backing). */
  readonly backing?: BlockNode | null;
  /**
   * The format was found by probing and came out raw. As in QEMU, writes that
   * would make the first sector probe as another format are refused, so a guest
   * cannot turn its disk into, say, a qcow2 that names a host file as backing.
   */
  readonly probedRaw?: boolean;
}

/** What a write-like request did, as observers see it. */
export interface WriteEvent {
  readonly kind: 'write' | 'zero' | 'discard';
  readonly offset: number;
  readonly length: number;
  /** The bytes written (kind 'write' only), unless they came from a host range. */
  readonly data?: Uint8Array;
  /** Where the bytes came from when a job copied them between host files (kind 'write' only). */
  readonly source?: HostRange;
}

/**
 * Watches the writes of a node (dirty bitmaps, write-blocking mirror). `before`
 * runs before the driver sees the request, `after` once it succeeded; a
 * returned promise delays the guest's completion until it settles.
 */
export interface WriteObserver {
  before?(event: WriteEvent): void | Promise<void>;
  after?(event: WriteEvent): void | Promise<void>;
}

export class BlockNode implements ImageNode {
  #driver: BlockDriver;
  #backing: BlockNode | null;
  readonly clusterSize: number | undefined;
  readonly #probedRaw: boolean;
  readonly #tracker = new RequestTracker();
  readonly #observers = new Set<WriteObserver>();
  /** While set, requests go to this node instead (the moment of a pivot). */
  #forward: ImageNode | null = null;
  #closed = false;
  #zeroingEpoch = 0;

  private constructor(driver: BlockDriver, backing: BlockNode | null, clusterSize: number | undefined, probedRaw: boolean) {
    this.#driver = driver;
    this.#backing = backing;
    this.clusterSize = clusterSize;
    this.#probedRaw = probedRaw;
  }

  /** The format driver of this layer. Jobs holding a range lock or a quiesce read and write through it directly. */
  get driver(): BlockDriver {
    return this.#driver;
  }

  get backing(): BlockNode | null {
    return this.#backing;
  }

  /** Wraps an opened driver, attaching `options.backing` as its backing source. */
  static async attach(driver: BlockDriver, options: BlockNodeOptions = {}): Promise<BlockNode> {
    const backing = options.backing ?? null;
    const info = await driver.info();
    const node = new BlockNode(driver, backing, info.clusterSize, options.probedRaw ?? false);
    driver.setBacking(backing ? backingSourceOf(backing) : null);
    return node;
  }

  get filename(): string {
    return this.#driver.filename;
  }

  get format(): FormatName {
    return this.#driver.format;
  }

  get readOnly(): boolean {
    return this.#driver.readOnly;
  }

  get length(): number {
    return this.#driver.length;
  }

  get createdZeroed(): boolean {
    return this.#driver.createdZeroed !== false;
  }

  get requestAlignment(): number {
    return this.#driver.requestAlignment;
  }

  // read and write are not async functions: the common request (admitted at
  // once, nobody watching) is one call into the driver and one callback, not
  // two more promise layers per request.
  read(offset: number, buf: Uint8Array): Promise<void> {
    try {
      this.#check(offset, buf.length);
    } catch (e) {
      return Promise.reject(e);
    }
    if (buf.length === 0) return Promise.resolve();
    const ticket = this.#tracker.tryBegin(offset, buf.length, false);
    if (ticket === null) return this.#readAdmitted(offset, buf);
    let started: Promise<void>;
    try {
      started = this.#forward ? this.#forward.read(offset, buf) : this.#driver.read(offset, buf);
    } catch (e) {
      this.#tracker.end(ticket);
      return Promise.reject(e);
    }
    return this.#ending(ticket, started);
  }

  async #readAdmitted(offset: number, buf: Uint8Array): Promise<void> {
    const ticket = await this.#tracker.begin(offset, buf.length, false);
    try {
      if (this.#forward) await this.#forward.read(offset, buf);
      else await this.#driver.read(offset, buf);
    } finally {
      this.#tracker.end(ticket);
    }
  }

  write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    try {
      this.#checkWrite(offset, data.length);
    } catch (e) {
      return Promise.reject(e);
    }
    if (data.length === 0) return Promise.resolve();
    if (this.#forward === null && this.#observers.size === 0 && !(this.#probedRaw && offset < PROBE_GUARD)) {
      const ticket = this.#tracker.tryBegin(offset, data.length, true);
      if (ticket !== null) {
        let started: Promise<void>;
        try {
          started = this.#driver.write(offset, data, flags);
        } catch (e) {
          this.#tracker.end(ticket);
          return Promise.reject(e);
        }
        return this.#ending(ticket, started);
      }
    }
    return this.#writeWatched(offset, data, flags);
  }

  async #writeWatched(offset: number, data: Uint8Array, flags: WriteFlags | undefined): Promise<void> {
    if (this.#probedRaw && offset < PROBE_GUARD) await this.#guardProbedHead(offset, data);
    await this.#tracked({ kind: 'write', offset, length: data.length, data }, (d) => d.write(offset, data, flags));
  }

  /** Ends the admitted request's ticket when `started` settles (the driver call was made by the caller: no closure per request). */
  #ending(ticket: RequestTicket, started: Promise<void>): Promise<void> {
    return started.then(
      () => this.#tracker.end(ticket),
      (e: unknown) => {
        this.#tracker.end(ticket);
        throw e;
      },
    );
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    // Zeros cannot create a format signature, so the probed-raw guard is not needed.
    this.#checkWrite(offset, length);
    if (length > 0) await this.#zeroing(() => this.#tracked({ kind: 'zero', offset, length }, (d) => d.writeZeroes(offset, length, flags)));
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#checkWrite(offset, length);
    if (length > 0) await this.#zeroing(() => this.#tracked({ kind: 'discard', offset, length }, (d) => d.discard(offset, length)));
  }

  get zeroingEpoch(): number {
    return this.#zeroingEpoch;
  }

  /** Counts a request that may leave holes, at its start and at its end (a reader's map may fall in between). */
  async #zeroing(op: () => Promise<void>): Promise<void> {
    this.#zeroingEpoch++;
    try {
      await op();
    } finally {
      this.#zeroingEpoch++;
    }
  }

  // ---- what jobs use -------------------------------------------------------------

  /**
   * Hands `sink` the host ranges holding [offset, offset+length) of this chain
   * (see hostRangeInChain), in order, under one read ticket, until one is not
   * a plain host range or the sink refuses it; returns the bytes handed over.
   */
  async copyViaHost(offset: number, length: number, sink: HostSink): Promise<number> {
    this.#check(offset, length);
    if (length === 0) return 0;
    const ticket = await this.#tracker.begin(offset, length, false);
    try {
      if (this.#forward) return 0;
      const end = offset + length;
      let pos = offset;
      while (pos < end) {
        const range = await hostRangeInChain(this, pos, end - pos);
        if (!range || !(await sink(pos, range))) break;
        pos += range.length;
      }
      return pos - offset;
    } finally {
      this.#tracker.end(ticket);
    }
  }

  /**
   * Calls `send` with the host range holding [offset, offset+length) when the
   * range is plain data of this layer in one run of one host file, and returns
   * what `send` returns; returns null, without calling it, otherwise (or while
   * requests are held back). It counts as one read request, begun and ended
   * within this call: `send` must take the bytes before it returns (a socket's
   * sendfile does).
   */
  sendFromHost<T>(offset: number, length: number, send: (range: HostRange) => T): T | null {
    if (this.#forward !== null || !this.#driver.hostRangeNow || length <= 0 || offset < 0 || offset + length > this.length) return null;
    const ticket = this.#tracker.tryBegin(offset, length, false);
    if (ticket === null) return null;
    try {
      const range = this.#driver.hostRangeNow(offset, length);
      return range === null ? null : send(range);
    } finally {
      this.#tracker.end(ticket);
    }
  }

  /**
   * `write` of `src.length` bytes taken from a host range; false, having
   * written nothing, where the driver cannot copy from that file (or the
   * probed-raw guard must see the bytes). Observers see the attempt even when
   * the driver refuses (at worst a dirty bit set in vain); a job stops trying
   * after the first refusal.
   */
  async writeFromHost(offset: number, src: HostRange): Promise<boolean> {
    this.#checkWrite(offset, src.length);
    const driver = this.#driver;
    if (src.length === 0) return true;
    if (!driver.writeFromHost || (this.#probedRaw && offset < PROBE_GUARD)) return false;
    let written = false;
    await this.#tracked({ kind: 'write', offset, length: src.length, source: src }, async (d) => {
      written = (await d.writeFromHost?.(offset, src)) ?? false;
    });
    return written;
  }

  async writeRunsFromHost(runs: readonly GuestCopyRun[], zeroBlock: number): Promise<number | null> {
    const driver = this.#driver;
    if (!driver.writeRunsFromHost || this.#observers.size > 0 || this.#forward !== null || runs.length === 0) return null;
    let from = Infinity;
    let to = 0;
    for (const r of runs) {
      this.#checkWrite(r.offset, r.src.length);
      // The probed-raw guard must see what lands on the first sectors.
      if (this.#probedRaw && r.offset < PROBE_GUARD) return null;
      from = Math.min(from, r.offset);
      to = Math.max(to, r.offset + r.src.length);
    }
    // A format with clusters writes the runs' clusters whole: the request covers them.
    const unit = this.clusterSize ?? 1;
    from -= from % unit;
    to = Math.min(this.length, Math.ceil(to / unit) * unit);
    const ticket = await this.#tracker.begin(from, to - from, true);
    try {
      return await driver.writeRunsFromHost(runs, zeroBlock);
    } finally {
      this.#tracker.end(ticket);
    }
  }

  /** Watches writes, zeroes and discards on this node; returns the detach function. */
  addWriteObserver(observer: WriteObserver): () => void {
    this.#observers.add(observer);
    return () => this.#observers.delete(observer);
  }

  /** Excludes writes to a range (waits for those in flight); call the result to release. */
  lockRange(offset: number, length: number): Promise<() => void> {
    return this.#tracker.lockRange(offset, length);
  }

  /** Holds every new request and waits for those in flight; call the result to let them go. */
  quiesce(): Promise<() => void> {
    return this.#tracker.quiesce();
  }

  /**
   * Sends requests to `node` instead of this layer (null: back to this layer).
   * A job sets it while quiesced, just before the graph switches users over, so
   * requests already admitted here reach the new active node.
   */
  forwardTo(node: ImageNode | null): void {
    this.#forward = node;
  }

  /**
   * Reopens this layer with another mode (a commit's base becomes writable,
   * then read-only again). Requests on the node wait meanwhile. The old driver
   * closes first, releasing its image lock, so the new mode's lock can be
   * taken (OFD locks of two descriptions conflict even in one process); if
   * the new mode cannot be opened, the old mode is opened again.
   */
  async reopen(options: { readonly readOnly: boolean }): Promise<void> {
    this.#checkOpen();
    if (this.#driver.readOnly === options.readOnly) return;
    const release = await this.#tracker.quiesce();
    try {
      const old = this.#driver;
      if (!old.readOnly) await old.flush();
      await old.close();
      try {
        this.#driver = await this.#openDriver(options.readOnly);
      } catch (e) {
        this.#driver = await this.#openDriver(old.readOnly);
        throw e;
      }
    } finally {
      release();
    }
  }

  async #openDriver(readOnly: boolean): Promise<BlockDriver> {
    const lock = await ImageLock.acquire(this.filename, imageLockRequest({ readOnly, metadataFormat: this.format !== 'raw', forceShare: false }));
    let driver: BlockDriver;
    try {
      driver = await formatByName(this.format).open(this.filename, { readOnly });
    } catch (e) {
      await lock.release();
      throw e;
    }
    driver.setBacking(this.#backing ? backingSourceOf(this.#backing) : null);
    return lock.supported ? closingWithLock(driver, lock) : driver;
  }

  /**
   * Changes the node below this one. With `persist`, the image's backing
   * reference is rewritten too (the format must support it: ENOTSUP
   * otherwise); `reference` is the name stored (default: the node's filename).
   */
  async changeBacking(backing: BlockNode | null, options: { readonly persist: boolean; readonly reference?: string }): Promise<void> {
    this.#checkOpen();
    if (options.persist) {
      if (!this.#driver.changeBackingFile) {
        throw new VdiskError('ENOTSUP', `Cannot change the backing file of '${this.filename}': format '${this.format}' does not support it`, {
          file: this.filename,
          field: 'backing_file',
        });
      }
      await this.#driver.changeBackingFile(backing ? { filename: options.reference ?? backing.filename, format: backing.format } : null);
    }
    this.#backing = backing;
    this.#driver.setBacking(backing ? backingSourceOf(backing) : null);
  }

  /**
   * Drops everything this layer defines, so it reads through to its backing
   * (qemu-img commit empties the top after committing). ENOTSUP when the
   * format cannot.
   */
  async makeEmpty(): Promise<void> {
    this.#checkOpen();
    this.#checkWritable();
    const candidate = (this.#driver as BlockDriver & { makeEmpty?: unknown }).makeEmpty;
    if (typeof candidate !== 'function') {
      throw new VdiskError('ENOTSUP', `Cannot empty '${this.filename}': format '${this.format}' does not support it`, { file: this.filename });
    }
    const release = await this.#tracker.quiesce();
    try {
      await (candidate as () => Promise<void>).call(this.#driver);
    } finally {
      release();
    }
  }

  /** Flushes and closes this layer only, leaving the nodes below open (a dropped top or intermediate image). */
  async closeLayer(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (!this.readOnly) await this.#driver.flush();
    } finally {
      await this.#driver.close();
    }
  }

  async #tracked(event: WriteEvent, op: (driver: BlockDriver) => Promise<void>): Promise<void> {
    const ticket = this.#tracker.tryBegin(event.offset, event.length, true) ?? (await this.#tracker.begin(event.offset, event.length, true));
    try {
      const forward = this.#forward;
      if (forward) {
        if (event.kind === 'write' && event.data) await forward.write(event.offset, event.data);
        else if (event.kind === 'write' && event.source) await forward.write(event.offset, await readHostRange(event.source));
        else if (event.kind === 'zero') await forward.writeZeroes(event.offset, event.length);
        else await forward.discard(event.offset, event.length);
        return;
      }
      if (this.#observers.size > 0) await this.#notify('before', event);
      await op(this.#driver);
      if (this.#observers.size > 0) await this.#notify('after', event);
    } finally {
      this.#tracker.end(ticket);
    }
  }

  async #notify(phase: 'before' | 'after', event: WriteEvent): Promise<void> {
    for (const o of [...this.#observers]) {
      const r = o[phase]?.(event);
      if (r) await r;
    }
  }

  async writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    this.#checkWrite(offset, data.length);
    if (!this.#driver.writeCompressed) {
      throw new VdiskError('ENOTSUP', `Compressed writes are not supported by format '${this.format}' ('${this.filename}')`, {
        file: this.filename,
        offset,
      });
    }
    await this.#driver.writeCompressed(offset, data);
  }

  async flush(): Promise<void> {
    this.#checkOpen();
    if (!this.readOnly) await this.#driver.flush();
  }

  async layerStatus(offset: number, length: number): Promise<LayerExtent[]> {
    this.#check(offset, length);
    return length === 0 ? [] : this.#driver.blockStatus(offset, length);
  }

  async blockStatus(offset: number, length: number, options: { readonly base?: ImageNode | null } = {}): Promise<ChainExtent[]> {
    this.#check(offset, length);
    if (length === 0) return [];
    return mergeChainStatus(this.#statusLayers(options.base ?? null), offset, length);
  }

  seekData(offset: number): Promise<number> {
    this.#checkOpen();
    return seekChain(this, offset, 'data');
  }

  seekHole(offset: number): Promise<number> {
    this.#checkOpen();
    return seekChain(this, offset, 'hole');
  }

  info(): Promise<FormatInfo> {
    this.#checkOpen();
    return this.#driver.info();
  }

  check(repair: RepairMode): Promise<CheckReport> {
    this.#checkOpen();
    if (repair !== 'none' && this.readOnly) {
      throw new VdiskError('EPERM', `Cannot repair '${this.filename}': it is open read-only`, { file: this.filename });
    }
    return this.#driver.check(repair);
  }

  async resize(newLength: number, options?: { readonly shrink?: boolean; readonly preallocation?: string }): Promise<void> {
    this.#checkOpen();
    this.#checkWritable();
    checkSize(this.filename, newLength);
    await this.#zeroing(() => this.#driver.resize(newLength, options));
  }

  /** The driver's internal snapshots (qcow2), passed through. */
  get snapshots(): SnapshotOps | undefined {
    return this.#driver.snapshots;
  }

  /** The driver's persistent dirty bitmaps (qcow2), passed through. */
  get bitmaps(): BitmapOps | undefined {
    return this.#driver.bitmaps;
  }

  /** qemu-img amend, passed through; ENOTSUP when the format cannot amend. */
  async amend(options: Readonly<Record<string, string>>, progress?: ProgressCallback): Promise<void> {
    this.#checkOpen();
    if (!this.#driver.amend) {
      throw new VdiskError('ENOTSUP', `Format driver '${this.format}' does not support option amendment`, { file: this.filename });
    }
    this.#checkWritable();
    await this.#driver.amend(options, progress);
  }

  chain(): BlockNode[] {
    const out: BlockNode[] = [this];
    for (let n = this.#backing; n; n = n.#backing) out.push(n);
    return out;
  }

  /** Flushes and closes every node of the chain, top first; the first failure is rethrown after all are closed. */
  async close(): Promise<void> {
    let failure: unknown = null;
    for (const node of this.chain()) {
      if (node.#closed) continue;
      node.#closed = true;
      try {
        if (!node.readOnly) await node.#driver.flush();
      } catch (e) {
        failure ??= e;
      }
      try {
        await node.#driver.close();
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure !== null) throw failure;
  }

  /** The layers from this node down to (not including) `base`, as the chain merge sees them. */
  #statusLayers(base: ImageNode | null): StatusLayer[] {
    const nodes: BlockNode[] = [];
    let found = base === null;
    for (const n of this.chain()) {
      if (n === base) {
        found = true;
        break;
      }
      nodes.push(n);
    }
    if (!found || nodes.length === 0) {
      throw new VdiskError('EINVAL', `'${base?.filename ?? ''}' is not a backing node below '${this.filename}'`, { file: this.filename });
    }
    return nodes.map((n) => ({
      filename: n.filename,
      backingLength: n.backing ? n.backing.length : null,
      status: (offset: number, length: number) => n.#driver.blockStatus(offset, length),
    }));
  }

  async #guardProbedHead(offset: number, data: Uint8Array): Promise<void> {
    const head = new Uint8Array(Math.min(PROBE_GUARD, this.length));
    await this.#driver.read(0, head);
    head.set(data.subarray(0, Math.max(0, head.length - offset)), offset);
    const becomes = probeFormat(head);
    if (becomes !== 'raw') {
      throw new VdiskError(
        'EPERM',
        `Refusing to write the first sector of '${this.filename}': its format was probed as raw and the write would make it look like ${becomes}; open it with an explicit format (-f raw) to allow this`,
        { file: this.filename, offset },
      );
    }
  }

  #check(offset: number, length: number): void {
    this.#checkOpen();
    checkRequest(this.filename, { offset, length }, this.length);
  }

  #checkWrite(offset: number, length: number): void {
    this.#check(offset, length);
    this.#checkWritable();
  }

  #checkWritable(): void {
    if (this.readOnly) throw new VdiskError('EPERM', `'${this.filename}' is open read-only`, { file: this.filename });
  }

  #checkOpen(): void {
    if (this.#closed) throw new VdiskError('EINVAL', `'${this.filename}' is closed`, { file: this.filename });
  }
}

/**
 * The host range holding the start of [offset, offset+length) in the chain
 * from `top`: the first layer that defines it must keep it as plain data on
 * its host; ranges a layer leaves to its backing are looked up below (within
 * the backing's length). Null: read it the usual way.
 */
async function hostRangeInChain(top: BlockNode, offset: number, length: number): Promise<HostRange | null> {
  for (let n: BlockNode | null = top; n; n = n.backing) {
    const ext = await n.driver.hostExtent?.(offset, length);
    if (!ext || ext.kind === 'other') return null;
    if (ext.kind === 'host') return ext.range;
    length = Math.min(ext.length, (n.backing?.length ?? 0) - offset);
    if (length <= 0) return null;
  }
  return null;
}

/**
 * What an overlay's driver sees of the node below: its live length, and reads
 * that are zero-filled past its end instead of failing, so a driver that reads
 * a whole cluster across the backing's end still gets the right bytes.
 */
function backingSourceOf(node: BlockNode): BackingSource {
  return {
    get length(): number {
      return node.length;
    },
    async read(offset: number, buf: Uint8Array): Promise<void> {
      const inside = Math.max(0, Math.min(buf.length, node.length - offset));
      if (inside > 0) await node.read(offset, buf.subarray(0, inside));
      buf.fill(0, inside);
    },
    async isZero(offset: number, length: number): Promise<boolean> {
      const inside = Math.max(0, Math.min(length, node.length - offset));
      if (inside === 0) return true;
      const extents = await node.blockStatus(offset, inside);
      return extents.every((e) => e.zero);
    },
  };
}

