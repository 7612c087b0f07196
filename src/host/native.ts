/**
 * Host calls Node lacks (fallocate, SEEK_DATA/SEEK_HOLE, OFD locks), from the
 * small N-API addon in native/. When the addon is not built, `nativeHost()`
 * returns null and callers use their portable fallbacks.
 *
 * The addon's calls are synchronous syscalls on the JS thread; they are short on
 * local file systems. Where a file system lacks a feature (EOPNOTSUPP) the call
 * returns false; other failures throw an Error whose `code` is the errno name.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** A conflicting lock reported by `getLock`. */
export interface HostLockInfo {
  readonly type: 'r' | 'w';
  readonly start: number;
  /** 0 means "to the end of the file". */
  readonly length: number;
}

export interface NativeHost {
  punchHole(fd: number, offset: number, length: number): boolean;
  zeroRange(fd: number, offset: number, length: number): boolean;
  allocate(fd: number, offset: number, length: number): boolean;
  /** Offset of the next data at or after `offset`, or null past the last data. */
  seekData(fd: number, offset: number): number | null;
  /** Offset of the next hole at or after `offset` (the end of the file counts). */
  seekHole(fd: number, offset: number): number;
  /** The offset of the end of the file (lseek SEEK_END): a block device's size, which fstat reports as 0. */
  endOffset?(fd: number): number;
  /**
   * Takes ('r' shared, 'w' exclusive) or releases ('u') an OFD lock on a byte
   * range without waiting; false when another open file description holds a
   * conflicting lock. length 0 = to the end of the file.
   */
  setLock(fd: number, start: number, length: number, type: 'r' | 'w' | 'u'): boolean;
  /** The first lock that would conflict with taking `type` on the range, or null. */
  getLock(fd: number, start: number, length: number, type: 'r' | 'w'): HostLockInfo | null;
  /**
   * preadv2 / pwritev2 with RWF_NOWAIT: bytes transferred; -1 when the call
   * would block (data not cached); -2 when the host lacks RWF_NOWAIT for this
   * call. Absent in addons built before these were added.
   */
  readonly readNoWait?: (fd: number, buf: Uint8Array, offset: number) => number;
  readonly writeNoWait?: (fd: number, buf: Uint8Array, offset: number) => number;
  /**
   * An io_uring (native/host_ring.c): null where the kernel has none. The addon
   * writes (tag, result) pairs into `results` and then calls `onComplete(count)`;
   * a result is bytes transferred or a negated errno. `polled`: a kernel thread
   * takes requests off the queue (IORING_SETUP_SQPOLL); null where not allowed.
   */
  readonly ringOpen?: (entries: number, results: Int32Array, onComplete: (count: number) => void, polled?: boolean, spinMicros?: number, cooperative?: boolean) => object | null;
  /**
   * Queues a request: op 0 read, 1 write, 2 fdatasync (buf null); flags bit 0:
   * leave it for `ringEnter` (else it is submitted at once), bit 1: straight to
   * io_uring's workers. Throws EAGAIN when the ring is full.
   */
  readonly ringSubmit?: (ring: object, op: number, fd: number, buf: Uint8Array | null, offset: number, tag: number, flags: number) => void;
  /** Submits the queued requests: how many the kernel took, or a negated errno (none taken, all dropped). */
  readonly ringEnter?: (ring: object) => number;
  /** Releases the ring; throws EBUSY while requests are in flight. */
  readonly ringClose?: (ring: object) => void;
  /**
   * How the ring waits for completions (native/host_ring.c, measured_wait):
   * [1 while watching the queue, else 0; mean time from one completion to
   * the next watching, the same sleeping, in ns: 0 until measured; 1 when the
   * ring is cooperative (IORING_SETUP_COOP_TASKRUN), else 0 (absent before it was added)].
   */
  readonly ringWaits?: (ring: object) => readonly [number, number, number, number?];
  /**
   * copy_file_range from (fdIn, offIn) to (fdOut, offOut) on the thread pool,
   * looping over short copies; calls `done(errnoName | null, result)`: bytes
   * copied (short only where the source ends), or -2 when the two files cannot
   * be copied this way and nothing was copied. Absent in older addons.
   */
  readonly copyRangeAsync?: (
    fdIn: number,
    offIn: number,
    fdOut: number,
    offOut: number,
    length: number,
    done: (err: string | null, result: number) => void,
  ) => void;
  /**
   * Sends `header` and then [offset, offset+length) of `fileFd` to a stream
   * socket without waiting and without copying the data through user memory
   * (send, then sendfile): the bytes the socket took, in order (fewer than
   * all when it is full or the file ends). Throws on a socket error. Absent in
   * older addons.
   */
  readonly sendFileNoWait?: (socketFd: number, header: Uint8Array, fileFd: number, offset: number, length: number) => number;
  /**
   * Copies runs of host files into `dstFd` on two threads of the addon's own
   * (a reader and a writer, see copy_engine.c): `runs` holds quadruples
   * (srcFd, srcOffset, length, dstOffset); aligned `zeroBlock`-sized blocks of
   * zeros are not written. Calls `done(null, bytesWritten)`, or
   * `done(errnoName, 'read' | 'write', dstOffset)`. Absent in older addons.
   */
  readonly copyRuns?: (
    dstFd: number,
    runs: Float64Array,
    zeroBlock: number,
    done: (err: string | null, sideOrWritten: 'read' | 'write' | number, at?: number) => void,
  ) => void;
  /**
   * Copies runs of host files into fresh clusters of a qcow2 image's file on
   * the two threads of copyRuns (see copy_engine.c): `runs` holds ascending
   * quadruples (srcFd, srcOffset, length, guestOffset); the guest clusters they
   * touch that hold a non-zero byte go, in guest order, to the clusters from
   * `hostStart` on, and clusters[i] becomes the guest cluster written at
   * hostStart + i * clusterSize, counted from the cluster holding the first
   * run's start (the runs span less than 2^31 clusters). Calls `done(null, count)`, or
   * `done(errnoName, 'read' | 'write', at)` (a guest offset for a read, a host
   * offset for a write). Absent in older addons.
   */
  readonly copyRunsPacked?: (
    dstFd: number,
    runs: Float64Array,
    clusterSize: number,
    hostStart: number,
    clusters: Int32Array,
    done: (err: string | null, sideOrCount: 'read' | 'write' | number, at?: number) => void,
  ) => void;
  /**
   * Asks for transparent huge pages (madvise MADV_HUGEPAGE) on the 2 MiB-aligned
   * middle of the buffer's memory: the offset of its first 2 MiB boundary, or -1
   * when it holds no whole huge page or the kernel refuses. Absent in older addons.
   */
  readonly adviseHugePages?: (buf: Uint8Array) => number;
  /** Raises a unix-domain socket's SO_SNDBUF to `bytes` (capped by the kernel): the size after, or -1 for other sockets. */
  readonly enlargeUnixSendBuffer?: (socketFd: number, bytes: number) => number;
}

/** The ring's four calls, present together, and its measure of how it waits where the addon has one. */
export type NativeRing = Required<Pick<NativeHost, 'ringOpen' | 'ringSubmit' | 'ringEnter' | 'ringClose'>> & Pick<NativeHost, 'ringWaits'>;

// Where the built addon lives relative to this module: from dist/src/host/ (the
// compiled tree), from src/host/ (should sources ever be run directly), and
// from dist/ (the CLI bundle, bin/vdisk.cjs).
const CANDIDATES = [
  '../../../native/build/Release/vdisk_native.node',
  '../../native/build/Release/vdisk_native.node',
  '../native/build/Release/vdisk_native.node',
];

/**
 * Loads the addon once. The binding is an immutable table of functions with no
 * per-image state, so caching it at module level is safe across images.
 */
let loaded: { readonly host: NativeHost | null } | undefined;

function load(): NativeHost | null {
  if (process.env['VDISK_NO_NATIVE'] === '1') return null;
  const require = createRequire(import.meta.url);
  for (const rel of CANDIDATES) {
    const path = fileURLToPath(new URL(rel, import.meta.url));
    if (!existsSync(path)) continue;
    try {
      return require(path) as NativeHost;
    } catch {
      // A stale or foreign-ABI build: behave as if it were missing.
      return null;
    }
  }
  return null;
}

/** The addon's functions, or null when it is not built (or VDISK_NO_NATIVE=1). */
export function nativeHost(): NativeHost | null {
  loaded ??= { host: load() };
  return loaded.host;
}
