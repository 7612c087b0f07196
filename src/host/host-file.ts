import { VdiskError } from '../errors.js';

/**
 * The host file: what a format driver stores its image in. Drivers see the host
 * only through this interface, so a fault-injecting twin can stand in for tests.
 */
export interface HostFile {
  readonly path: string;
  readonly readOnly: boolean;
  /**
   * A block or character device (an LVM volume, /dev/nbd0): its size is fixed,
   * so truncate only accepts sizes up to it and leaves it as it is, and an
   * image created on it starts from whatever the device held. Absent: false.
   */
  readonly device?: boolean;
  /** Current size of the file in bytes. */
  size(): Promise<number>;
  /** Fills `buf` from `offset`; bytes past the end of the file read as zeros. */
  read(buf: Uint8Array, offset: number): Promise<void>;
  /** Writes all of `buf` at `offset`, extending the file if needed. */
  write(buf: Uint8Array, offset: number): Promise<void>;
  /** Writes the buffers back to back from `offset` in one call where the host allows it. */
  writev(bufs: readonly Uint8Array[], offset: number): Promise<void>;
  /** Makes every completed write durable (fdatasync). */
  sync(): Promise<void>;
  truncate(length: number): Promise<void>;
  /** Deallocates a range so it reads as zeros; false when the host cannot. */
  punchHole(offset: number, length: number): Promise<boolean>;
  /** Makes a range read as zeros, keeping it allocated where the host can; false when it cannot. */
  zeroRange(offset: number, length: number): Promise<boolean>;
  /** Reserves space for a range (fallocate mode 0); false when the host cannot. */
  allocate(offset: number, length: number): Promise<boolean>;
  /**
   * lseek SEEK_DATA: the first offset >= `offset` holding data, or null when none
   * does before the end of the file. Without host support, every byte is data.
   */
  seekData(offset: number): Promise<number | null>;
  /** lseek SEEK_HOLE: the first offset >= `offset` in a hole (the end of the file counts). */
  seekHole(offset: number): Promise<number>;
  /** Bytes actually allocated on the host (st_blocks * 512). */
  allocatedSize(): Promise<number>;
  /**
   * True when `copyFrom` can copy from `src` inside the kernel, without the
   * bytes passing through JS. Absent: the file has no such path.
   */
  canCopyFrom?(src: HostFile): boolean;
  /**
   * Copies a range of another host file to `offset` of this one (as a read of
   * `src` then a write here would: past the source's end it reads zeros). In
   * the kernel where it can (copy_file_range), else through memory.
   */
  copyFrom?(src: HostRange, offset: number): Promise<void>;
  /**
   * Copies each run's host range to `run.at` of this file, leaving out blocks
   * of `zeroBlock` bytes (aligned in this file) that are all zeros: for a file
   * that reads as zeros there already (a fresh copy target). Runs on threads
   * of its own, off the event loop. Returns the bytes written, or null, having
   * written nothing, when this file or a source cannot be copied this way.
   */
  copyRunsFrom?(runs: readonly HostCopyRun[], zeroBlock: number): Promise<number | null>;
  /**
   * A bulk copy into fresh clusters of an image kept in this file (a qcow2
   * convert target), off the event loop: each run's host range goes to guest
   * offset `run.at`. The guest clusters (of `clusterSize` bytes) the runs touch
   * and that hold a non-zero byte are written, in guest order, one after
   * another from the offset `place` returns; `place` reserves
   * `clusters.length` clusters (the most the runs can touch) and is called
   * once the copy is sure to start. clusters[i] becomes the guest cluster
   * written at that offset + i * clusterSize, counted from the cluster holding
   * the first run's start (so small integers: the runs span less than 2^31
   * clusters). Returns how many were written,
   * or null, having neither placed nor written anything, when this file or a
   * source cannot be copied this way.
   */
  copyRunsPackedFrom?(runs: readonly HostCopyRun[], clusterSize: number, clusters: Int32Array, place: () => Promise<number>): Promise<number | null>;
  /**
   * Sends `header` and then [offset, offset+length) of this file to a
   * non-blocking stream socket straight from the page cache (sendfile: the
   * socket takes references to the cached pages, no copy through memory),
   * without waiting. Returns the bytes the socket took, header first: fewer
   * than all when it is full or the file ends. Null when this file has no such
   * path (opened O_DIRECT or O_DSYNC, no addon). Throws on a socket error.
   */
  sendToSocket?(socketFd: number, header: Uint8Array, offset: number, length: number): number | null;
  close(): Promise<void>;
}

/** A range of a host file: where a format keeps some guest bytes, as a copy between host files takes them. */
export interface HostRange {
  readonly file: HostFile;
  readonly offset: number;
  readonly length: number;
}

/** A failed `copyRunsFrom`: which side failed, and the offset in the target where. */
export class HostCopyError extends VdiskError {
  readonly side: 'read' | 'write';
  readonly at: number;

  constructor(base: VdiskError, side: 'read' | 'write', at: number) {
    super(base.code, base.message, { ...base.context, offset: at }, { cause: base.cause });
    this.side = side;
    this.at = at;
  }
}

/** A host range to be copied to offset `at` of another host file. */
export interface HostCopyRun {
  readonly src: HostRange;
  readonly at: number;
}

export interface HostOpenOptions {
  readonly readOnly?: boolean;
  /** Create the file (fail if it exists unless `truncate`). */
  readonly create?: boolean;
  readonly truncate?: boolean;
  /** Bypass the host page cache (O_DIRECT) where the file system allows it. */
  readonly direct?: boolean;
  /** Each write is durable on return (O_DSYNC). */
  readonly dsync?: boolean;
  /**
   * The file's only user is one copy loop (convert), which waits for each request
   * anyway: buffered writes of any size are done on the JS thread, even after a
   * slow one, and so are small page-cache reads; reads from 128 KiB go to
   * io_uring's kernel workers where there is a ring (worker-reads.ts). A server
   * leaves this off: its other requests must not wait behind a long copy.
   */
  readonly inlineIo?: boolean;
}
