import type {
  BitmapOps,
  CacheMode,
  FormatInfo,
  FormatName,
  GuestCopyRun,
  LayerExtent,
  ProgressCallback,
  SnapshotOps,
  WriteFlags,
  ZeroFlags,
  CheckReport,
  RepairMode,
} from '../formats/driver.js';
import type { HostRange } from '../host/host-file.js';
import type { Qcow2Tuning } from '../formats/registry-types.js';

export type { GuestCopyRun };

export type { HostRange };

/** Takes a host range holding guest bytes at `offset` (a target's writeFromHost); false: it cannot. */
export type HostSink = (offset: number, src: HostRange) => Promise<boolean>;

/** One extent of a whole chain's allocation map, as `qemu-img map` reports it. */
export interface ChainExtent {
  readonly offset: number;
  readonly length: number;
  /** Some layer of the chain defines this range (qemu-img map's `present`). */
  readonly present: boolean;
  readonly zero: boolean;
  readonly data: boolean;
  /**
   * 0 = top layer; the depth of the layer that defines the range. When no layer
   * defines it (present=false), qemu-img map reports the index of the layer where
   * the walk ended: the bottom layer (chain length - 1), a layer whose backing is
   * shorter than the offset, or the last layer above `base`.
   */
  readonly depth: number;
  readonly hostOffset?: number;
  /** The file holding the data at hostOffset. */
  readonly hostFile?: string;
  readonly compressed?: boolean;
}

export interface OpenOptions {
  /** Format of the top image; probed when absent (raw never becomes another format by probing a guest's data). */
  readonly format?: FormatName;
  readonly readOnly?: boolean;
  readonly cache?: CacheMode;
  readonly forceShare?: boolean;
  /**
   * The image's only user is one copy loop (qemu-img convert): cached reads and
   * buffered writes are done on the JS thread (see HostOpenOptions.inlineIo).
   */
  readonly inlineIo?: boolean;
  /** Do not open the backing chain (qemu-img's -u / unsafe cases). */
  readonly noBacking?: boolean;
  /** Leave a dirty/in-use image as found instead of repairing it on open (what `check` needs). */
  readonly noRepair?: boolean;
  /** Receives warnings worth showing a user (an image that cannot be locked); none: silent. */
  readonly onWarning?: (message: string) => void;
  /** qcow2 runtime options for the top image when it is qcow2 (its backing files keep the defaults, as in QEMU). */
  readonly qcow2Tuning?: Qcow2Tuning;
}

export type { LayerExtent, WriteFlags, ZeroFlags, FormatInfo, CheckReport, RepairMode, SnapshotOps, BitmapOps, ProgressCallback };

/**
 * The public face of an opened image (one node of a chain, with the nodes below
 * it). Implemented by `BlockNode` in block/node.ts; the CLI, NBD server and jobs
 * work only through this. Offsets and lengths are bytes; every request is checked
 * against `length` (ERANGE) before it reaches a driver.
 */
export interface ImageNode {
  readonly filename: string;
  readonly format: FormatName;
  readonly readOnly: boolean;
  /** Virtual size in bytes. */
  readonly length: number;
  /** The node below this one, or null. */
  readonly backing: ImageNode | null;
  /** Largest alignment that avoids read-modify-write (bytes). */
  readonly requestAlignment: number;
  /** Cluster size of the format, when it has clusters. */
  readonly clusterSize: number | undefined;
  /** False when this layer need not have read as zeros when it was created (see BlockDriver.createdZeroed). Absent: it did. */
  readonly createdZeroed?: boolean;
  /**
   * Changes whenever a range may have become a hole (a discard or zero write
   * starts or ends, a resize): lets a reader that remembered ranges as data
   * know the memory is stale. Absent where the node does not count them.
   */
  readonly zeroingEpoch?: number;

  read(offset: number, buf: Uint8Array): Promise<void>;
  write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void>;
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  /**
   * Hands the host ranges that hold [offset, offset+length) of this chain to
   * `sink`, in order, while it takes them; the bytes handed over (a prefix of
   * the range). Absent where the node cannot name its bytes on the host.
   */
  copyViaHost?(offset: number, length: number, sink: HostSink): Promise<number>;
  /**
   * Calls `send` with the host range holding [offset, offset+length) when it is
   * plain data in one run of one host file, as one read request within this
   * call; null (not called) otherwise. Absent where the node cannot name its bytes.
   */
  sendFromHost?<T>(offset: number, length: number, send: (range: HostRange) => T): T | null;
  /** `write` of bytes taken from a host range (copy_file_range); false, having written nothing, when this node cannot. */
  writeFromHost?(offset: number, src: HostRange): Promise<boolean>;
  /**
   * Bulk copy into ranges that read as zeros (a fresh convert target), off
   * the event loop: see BlockDriver.writeRunsFromHost. The bytes written, or
   * null, having written nothing, when this node cannot (a format without
   * the path, a host that cannot, observers that must see the data).
   */
  writeRunsFromHost?(runs: readonly GuestCopyRun[], zeroBlock: number): Promise<number | null>;
  /** Compressed write of whole clusters (ENOTSUP where the format has no compression). */
  writeCompressed(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;

  /** This layer alone. */
  layerStatus(offset: number, length: number): Promise<LayerExtent[]>;
  /**
   * The whole chain down to (not including) `base` when given: merged extents
   * covering [offset, offset+length) exactly, adjacent equal extents coalesced.
   */
  blockStatus(offset: number, length: number, options?: { readonly base?: ImageNode | null }): Promise<ChainExtent[]>;
  /** lseek SEEK_DATA over the chain: first offset >= `offset` that is not a hole; ENXIO if none or offset >= length. */
  seekData(offset: number): Promise<number>;
  /** lseek SEEK_HOLE over the chain: first hole >= `offset`; the end of the disk counts as a hole; ENXIO if offset >= length. */
  seekHole(offset: number): Promise<number>;

  info(): Promise<FormatInfo>;
  check(repair: RepairMode): Promise<CheckReport>;
  resize(newLength: number, options?: { readonly shrink?: boolean; readonly preallocation?: string }): Promise<void>;
  /** All nodes from this one down to the bottom of the chain. */
  chain(): ImageNode[];
  /** This layer's internal snapshots; undefined when the format has none. */
  readonly snapshots?: SnapshotOps | undefined;
  /** This layer's persistent dirty bitmaps; undefined when the format has none. */
  readonly bitmaps?: BitmapOps | undefined;
  /** qemu-img amend of this layer; ENOTSUP when the format cannot amend. */
  amend?(options: Readonly<Record<string, string>>, progress?: ProgressCallback): Promise<void>;
  /** Flushes and closes this node and every node below it. */
  close(): Promise<void>;
}
