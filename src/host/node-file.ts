import * as fs from 'node:fs';
import { fromSystemError, VdiskError } from '../errors.js';
import { HostCopyError, type HostCopyRun, type HostFile, type HostOpenOptions, type HostRange } from './host-file.js';
import { nativeHost, type NativeHost } from './native.js';
import type { HostRing } from './host-ring.js';
import { SyncWritePolicy } from './sync-write-policy.js';
import { WORKER_READ_MIN, workerReadRing } from './worker-reads.js';
import { cb, fdatasyncFd, preadFd, pwriteFd, pwritevFd } from './fs-calls.js';

/**
 * Writes up to this size first try RWF_NOWAIT on the JS thread: a page-cache
 * hit then costs a few microseconds instead of a thread-pool round trip (which
 * dominated 4 KiB NBD latency). Larger ones go to the pool, where copies run
 * in parallel with the JS thread.
 */
const NOWAIT_MAX = 64 * 1024;

/**
 * Reads up to this size try RWF_NOWAIT first too, whole block-job chunks
 * included. Handing a 1 MiB read to the pool cost the JS thread more than
 * copying it inline (CPU profiles of a 1 GiB commit on the 2-vCPU machine:
 * 0.18-0.26 ms of dispatch per read, the woken pool thread preempting the
 * event loop, against 0.16 ms for the inline copy), and a job's reads queued in
 * the 4-thread pool behind its own writes, which wait on the target's inode
 * lock: the writer then sat idle while the next chunk was read. A read that
 * misses the page cache still goes to the pool.
 */
const NOWAIT_READ_MAX = 1024 * 1024;

/**
 * Buffered writes up to this size run synchronously where the host lacks
 * RWF_NOWAIT for writes (see sync-write-policy.ts): a 1 MiB page-cache copy
 * takes about 100 us, less than handing it to the pool and back.
 */
const SYNC_WRITE_MAX = 1024 * 1024;

/**
 * With `inlineIo`, the largest request kept on the JS thread: a copy loop's
 * whole chunk (convert's are 2 MiB; a qcow2 write of one may add its COW).
 * On 2 busy cores a page-cache copy done here costs less CPU than the pool's
 * thread hand-offs, and an in-order write never queues behind reads.
 */
const INLINE_MAX = 4 * 1024 * 1024;

/** Bounce buffer size of a copy between host files done through memory. */
const BOUNCE = 1024 * 1024;

/** copy_file_range on the thread pool, as a promise: bytes copied, or -2 (not possible between these files). */
function copyRangeCb(
  call: NonNullable<NativeHost['copyRangeAsync']>,
  from: { readonly fd: number; readonly offset: number },
  to: { readonly fd: number; readonly offset: number },
  length: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    call(from.fd, from.offset, to.fd, to.offset, length, (err, n) => {
      if (err === null) resolve(n);
      else reject(Object.assign(new Error(`copy_file_range: ${err}`), { code: err }));
    });
  });
}

/** A host file on the local file system, opened with positional I/O. */
export class NodeHostFile implements HostFile {
  readonly path: string;
  readonly readOnly: boolean;
  readonly #fd: number;
  #closed = false;
  /** Cleared when the host answers that it lacks RWF_NOWAIT for that direction. */
  #readNoWait = true;
  #writeNoWait = true;
  /** Null when writes must never block the JS thread (O_DSYNC: each one waits for the device). */
  readonly #syncWrites: SyncWritePolicy | null;
  /**
   * Writes of the addon's threads to this file in flight (copyRunsPacked,
   * copyRunsFrom). A buffered write takes the file's inode lock, so a
   * synchronous write meanwhile waits on the JS thread for theirs: a refcount
   * block written so during a 4 GiB convert held the thread 33 ms, and the
   * copy's pipeline with it. Writes then go to the pool.
   */
  #addonWrites = 0;
  /** Largest read first tried with RWF_NOWAIT on the JS thread. */
  readonly #noWaitReadMax: number;
  /** Plain buffered I/O (no O_DIRECT, no O_DSYNC): what copy_file_range may write to. */
  readonly #buffered: boolean;
  /** A copy loop's buffered file: large reads go to io_uring's workers (see worker-reads.ts). */
  readonly #workerReads: boolean;
  /** Cleared once the kernel refused copy_file_range for this file. */
  #kernelCopy = true;
  /** The last kernel copy into this file queued: the next one waits for it. */
  #copyQueue: Promise<unknown> = Promise.resolve();
  /** See HostFile.device; fstat says such a file's size is 0, its end is its size. */
  readonly device: boolean;

  private constructor(path: string, fd: number, options: HostOpenOptions, device: boolean) {
    this.path = path;
    this.#fd = fd;
    this.device = device;
    this.readOnly = options.readOnly ?? false;
    const inline = options.inlineIo ?? false;
    this.#noWaitReadMax = inline ? INLINE_MAX : NOWAIT_READ_MAX;
    this.#buffered = options.direct !== true && options.dsync !== true;
    this.#workerReads = inline && this.#buffered;
    this.#syncWrites =
      this.readOnly || options.dsync === true ? null : new SyncWritePolicy(inline ? INLINE_MAX : SYNC_WRITE_MAX, { backOff: !inline });
  }

  static async open(path: string, options: HostOpenOptions = {}): Promise<NodeHostFile> {
    const readOnly = options.readOnly ?? false;
    let flags = readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR;
    if (options.create) flags |= fs.constants.O_CREAT | (options.truncate ? fs.constants.O_TRUNC : fs.constants.O_EXCL);
    if (options.dsync) flags |= fs.constants.O_DSYNC;
    if (options.direct && fs.constants.O_DIRECT !== undefined) flags |= fs.constants.O_DIRECT;
    let fd: number;
    try {
      fd = await cb<number>((done) => fs.open(path, flags, 0o644, done));
    } catch (e) {
      throw fromSystemError(e, path, 'open');
    }
    try {
      const st = fs.fstatSync(fd);
      return new NodeHostFile(path, fd, options, st.isBlockDevice() || st.isCharacterDevice());
    } catch (e) {
      fs.closeSync(fd);
      throw fromSystemError(e, path, 'stat');
    }
  }

  /** The OS file descriptor, for host calls such as OFD locks. */
  get fd(): number {
    return this.#fd;
  }

  async size(): Promise<number> {
    if (this.device) return this.#deviceSize();
    try {
      // fstat reads the in-memory inode: a thread-pool round trip costs more than the
      // call itself, and block status asks for the size on every query.
      return fs.fstatSync(this.#fd).size;
    } catch (e) {
      throw fromSystemError(e, this.path, 'stat');
    }
  }

  #deviceSize(): number {
    const endOffset = nativeHost()?.endOffset;
    if (!endOffset) throw new VdiskError('ENOTSUP', `'${this.path}' is a device, whose size only the native addon reads (npm run build:native)`, { file: this.path });
    try {
      return endOffset(this.#fd);
    } catch (e) {
      throw fromSystemError(e, this.path, 'lseek');
    }
  }

  async allocatedSize(): Promise<number> {
    try {
      const st = await cb<fs.Stats>((done) => fs.fstat(this.#fd, done));
      return st.blocks * 512;
    } catch (e) {
      throw fromSystemError(e, this.path, 'stat');
    }
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    const ring = this.#workerReads && buf.length >= WORKER_READ_MIN ? workerReadRing() : null;
    if (ring !== null) return this.#readOnWorker(ring, buf, offset);
    if (this.#readNoWait && buf.length <= this.#noWaitReadMax && buf.length > 0) {
      const n = this.#tryNoWait('read', buf, offset);
      if (n === buf.length) return;
      if (n === 0) {
        buf.fill(0);
        return;
      }
      if (n > 0) done = n;
    }
    return this.#readRest(buf, offset, done, (at) => preadFd(this.#fd, buf, at, buf.length - at, offset + at));
  }

  /**
   * Fills `buf` from byte `done` on, `readSome(at)` reading into it from byte
   * `at` and returning how many bytes it read; zeros past the end of the file.
   */
  async #readRest(buf: Uint8Array, offset: number, done: number, readSome: (at: number) => Promise<number>): Promise<void> {
    try {
      while (done < buf.length) {
        const n = await readSome(done);
        if (n === 0) {
          buf.fill(0, done);
          return;
        }
        done += n;
      }
    } catch (e) {
      throw fromSystemError(e, this.path, `read ${buf.length} bytes at offset ${offset} of`);
    }
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.#assertWritable();
    let done = 0;
    if (this.#writeNoWait && buf.length <= NOWAIT_MAX && buf.length > 0) {
      const n = this.#tryNoWait('write', buf, offset);
      if (n === buf.length) return;
      if (n > 0) done = n;
    }
    const sync = this.#addonWrites === 0 ? this.#syncWrites : null;
    if ((!this.#writeNoWait || buf.length > NOWAIT_MAX) && sync?.allows(buf.length - done)) {
      this.#writeSync(sync, buf, done, offset);
      return;
    }
    try {
      while (done < buf.length) {
        done += await pwriteFd(this.#fd, buf, done, buf.length - done, offset + done);
      }
    } catch (e) {
      throw fromSystemError(e, this.path, `write ${buf.length} bytes at offset ${offset} of`);
    }
  }

  async writev(bufs: readonly Uint8Array[], offset: number): Promise<void> {
    this.#assertWritable();
    // libuv's write loop issues one more (empty) pwrite for a trailing empty buffer,
    // which costs as much as a small write; leave empty ones out.
    if (bufs.some((b) => b.length === 0)) bufs = bufs.filter((b) => b.length > 0);
    if (bufs.length <= 1) {
      if (bufs[0]) await this.write(bufs[0], offset);
      return;
    }
    const total = bufs.reduce((s, b) => s + b.length, 0);
    let n: number;
    try {
      const sync = this.#addonWrites === 0 ? this.#syncWrites : null;
      n = sync?.allows(total) ? sync.timed(() => fs.writevSync(this.#fd, bufs as Uint8Array[], offset)) : await pwritevFd(this.#fd, bufs, offset);
    } catch (e) {
      throw fromSystemError(e, this.path, `write ${total} bytes at offset ${offset} of`);
    }
    if (n === total) return;
    // A short vectored write: finish the rest buffer by buffer.
    let pos = offset;
    for (const b of bufs) {
      const end = pos + b.length;
      if (end > offset + n) {
        const skip = Math.max(0, offset + n - pos);
        await this.write(b.subarray(skip), pos + skip);
      }
      pos = end;
    }
  }

  async sync(): Promise<void> {
    if (this.readOnly) return;
    try {
      await fdatasyncFd(this.#fd);
    } catch (e) {
      throw fromSystemError(e, this.path, 'sync');
    }
  }

  async truncate(length: number): Promise<void> {
    this.#assertWritable();
    if (this.device) {
      // As QEMU's file driver for devices: a size the device holds is accepted and changes nothing.
      if (length > this.#deviceSize()) throw new VdiskError('EINVAL', 'Cannot grow device files', { file: this.path });
      return;
    }
    try {
      await cb<void>((done) => fs.ftruncate(this.#fd, length, done));
    } catch (e) {
      throw fromSystemError(e, this.path, `truncate to ${length} bytes`);
    }
  }

  async punchHole(offset: number, length: number): Promise<boolean> {
    this.#assertWritable();
    return nativeHost()?.punchHole(this.#fd, offset, length) ?? false;
  }

  async zeroRange(offset: number, length: number): Promise<boolean> {
    this.#assertWritable();
    return nativeHost()?.zeroRange(this.#fd, offset, length) ?? false;
  }

  async allocate(offset: number, length: number): Promise<boolean> {
    this.#assertWritable();
    return nativeHost()?.allocate(this.#fd, offset, length) ?? false;
  }

  async seekData(offset: number): Promise<number | null> {
    // A device answers SEEK_DATA with EINVAL: every byte of it is data, as QEMU reports it.
    const native = this.device ? null : nativeHost();
    if (native) return native.seekData(this.#fd, offset);
    const size = await this.size();
    return offset < size ? offset : null;
  }

  async seekHole(offset: number): Promise<number> {
    const native = this.device ? null : nativeHost();
    if (native) return native.seekHole(this.#fd, offset);
    return Math.max(offset, await this.size());
  }

  canCopyFrom(src: HostFile): boolean {
    return this.#kernelCopy && this.#buffered && src instanceof NodeHostFile && src.#buffered && nativeHost()?.copyRangeAsync !== undefined;
  }

  async copyRunsFrom(runs: readonly HostCopyRun[], zeroBlock: number): Promise<number | null> {
    this.#assertWritable();
    const call = nativeHost()?.copyRuns;
    const quads = call ? this.#runQuads(runs) : null;
    if (!call || !quads) return null;
    return this.#engineCopy(runs, (done) => call(this.#fd, quads, zeroBlock, done));
  }

  async copyRunsPackedFrom(runs: readonly HostCopyRun[], clusterSize: number, clusters: Int32Array, place: () => Promise<number>): Promise<number | null> {
    this.#assertWritable();
    const call = nativeHost()?.copyRunsPacked;
    const quads = call ? this.#runQuads(runs) : null;
    if (!call || !quads) return null;
    const hostStart = await place();
    return this.#engineCopy(runs, (done) => call(this.#fd, quads, clusterSize, hostStart, clusters, done));
  }

  /**
   * Runs one of the addon's copies (`start` hands it its done callback) and
   * waits for it: the number it reports, or its failure as a HostCopyError.
   * A failed read's `at` is where the data goes, as the runs' `at` says (a
   * guest or a host offset): the run that covers it names the source; a failed
   * write is this file's.
   */
  async #engineCopy(runs: readonly HostCopyRun[], start: (done: (err: string | null, sideOrCount: string | number, at?: number) => void) => void): Promise<number> {
    this.#addonWrites++;
    const result = await new Promise<{ count: number } | { err: string; side: string; at: number }>((resolve) => {
      start((err, sideOrCount, at) => resolve(err === null ? { count: Number(sideOrCount) } : { err, side: String(sideOrCount), at: at ?? 0 }));
    }).finally(() => this.#addonWrites--);
    if ('count' in result) return result.count;
    const side = result.side === 'read' ? 'read' : 'write';
    const from = side === 'read' ? runs.find((r) => result.at >= r.at && result.at < r.at + r.src.length) : undefined;
    throw this.#copyError(result.err, side, result.at, from?.src.file.path);
  }

  /** The runs as the addon takes them, (srcFd, srcOffset, length, at); null when a source is not a buffered file of this kind. */
  #runQuads(runs: readonly HostCopyRun[]): Float64Array | null {
    if (!this.#buffered || this.#closed) return null;
    const quads = new Float64Array(runs.length * 4);
    for (let i = 0; i < runs.length; i++) {
      const run = runs[i];
      const src = run?.src.file;
      if (!run || !(src instanceof NodeHostFile) || !src.#buffered || src.#closed) return null;
      quads.set([src.#fd, run.src.offset, run.src.length, run.at], i * 4);
    }
    return quads;
  }

  #copyError(err: string, side: 'read' | 'write', at: number, file: string | undefined): HostCopyError {
    const cause = Object.assign(new Error(err), { code: err, syscall: side === 'read' ? 'pread' : 'pwrite' });
    return new HostCopyError(fromSystemError(cause, file ?? this.path, side), side, at);
  }

  sendToSocket(socketFd: number, header: Uint8Array, offset: number, length: number): number | null {
    const call = nativeHost()?.sendFileNoWait;
    if (!this.#buffered || this.#closed || !call) return null;
    return call(socketFd, header, this.#fd, offset, length);
  }

  /**
   * copy_file_range on the thread pool: on one ext4 it is a page-cache copy in
   * the kernel (no reflink), one copy instead of a read into JS and a write
   * out of it, and the event loop does the job's bookkeeping meanwhile. Where
   * the kernel refuses (two file systems), this file copies through memory
   * from then on.
   *
   * One copy into this file at a time: copies run under the inode's lock, and
   * four of them at once (a job's steps in flight) left three pool threads
   * spinning on it (1 GiB commit: 1.29 s CPU against 1.18 s one at a time;
   * on the JS thread instead, 1.15 s CPU but the event loop stalls and the
   * wall time was worse, 1.49 s against 0.99 s; medians of 5 on 2 busy vCPUs).
   */
  async copyFrom(src: HostRange, offset: number): Promise<void> {
    this.#assertWritable();
    let done = 0;
    const call = nativeHost()?.copyRangeAsync;
    if (call && this.canCopyFrom(src.file) && src.file instanceof NodeHostFile) {
      let n: number;
      try {
        const from = { fd: src.file.#fd, offset: src.offset };
        const run = this.#copyQueue.then(() => copyRangeCb(call, from, { fd: this.#fd, offset }, src.length));
        this.#copyQueue = run.catch(() => undefined);
        n = await run;
      } catch (e) {
        throw fromSystemError(e, this.path, `copy ${src.length} bytes from '${src.file.path}' to offset ${offset} of`);
      }
      if (n === -2) this.#kernelCopy = false;
      else done = n;
    }
    // Through memory: what the kernel would not copy, and past the source's end (zeros, as read gives them).
    for (let buf: Uint8Array | null = null; done < src.length; ) {
      const n = Math.min(BOUNCE, src.length - done);
      buf = buf && buf.length >= n ? buf.subarray(0, n) : new Uint8Array(n);
      await src.file.read(buf, src.offset + done);
      await this.write(buf, offset + done);
      done += n;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await cb<void>((done) => fs.close(this.#fd, done));
    } catch (e) {
      throw fromSystemError(e, this.path, 'close');
    }
  }

  /** A read done by io_uring's kernel workers (see worker-reads.ts). */
  #readOnWorker(ring: HostRing, buf: Uint8Array, offset: number): Promise<void> {
    return this.#readRest(buf, offset, 0, (at) => ring.read(this.#fd, at === 0 ? buf : buf.subarray(at), offset + at, true));
  }

  /** Bytes moved without blocking, or a negative number when the caller must use the thread pool. */
  #tryNoWait(dir: 'read' | 'write', buf: Uint8Array, offset: number): number {
    const native = nativeHost();
    const call = dir === 'read' ? native?.readNoWait : native?.writeNoWait;
    if (!call) {
      this.#disableNoWait(dir);
      return -2;
    }
    let n: number;
    try {
      n = call(this.#fd, buf, offset);
    } catch {
      // A real error: let the thread-pool path meet it again and report it the usual way.
      return -1;
    }
    if (n === -2) this.#disableNoWait(dir);
    return n;
  }

  /** Writes `buf` from byte `done` synchronously (see SYNC_WRITE_MAX), timed by `policy`. */
  #writeSync(policy: SyncWritePolicy, buf: Uint8Array, done: number, offset: number): void {
    try {
      policy.timed(() => {
        let at = done;
        while (at < buf.length) at += fs.writeSync(this.#fd, buf, at, buf.length - at, offset + at);
      });
    } catch (e) {
      throw fromSystemError(e, this.path, `write ${buf.length} bytes at offset ${offset} of`);
    }
  }

  #disableNoWait(dir: 'read' | 'write'): void {
    if (dir === 'read') this.#readNoWait = false;
    else this.#writeNoWait = false;
  }

  #assertWritable(): void {
    if (this.readOnly) throw new VdiskError('EPERM', `'${this.path}' is open read-only`, { file: this.path });
  }
}
