/**
 * The seam between the block layer and the format drivers. Every format (raw,
 * qcow2, ploop) implements `BlockDriver`; nothing outside `formats/` knows a
 * format's tables. A driver never imports `block/`: what it needs from the
 * image below it (its backing) it sees through `BackingSource`.
 */
import type { HostRange } from '../host/host-file.js';

/** A host range whose bytes belong at guest `offset` (a bulk copy's unit). */
export interface GuestCopyRun {
  readonly offset: number;
  readonly src: HostRange;
}

/**
 * Formats vdisk can open. `parallels` is accepted as an alias of `ploop` by the probe.
 * `nbd` is a remote export opened by nbd/client (a daemon node, never in the format registry).
 */
export type FormatName = 'raw' | 'qcow2' | 'ploop' | 'nbd';

/**
 * Cache modes as qemu-img's -t spells them, and 'none-unsafe': O_DIRECT with
 * flushes that do nothing, which QEMU has no name for (-t does not take it) but
 * opens from cache.direct=on,cache.no-flush=on.
 */
export type CacheMode = 'writeback' | 'none' | 'unsafe' | 'directsync' | 'writethrough' | 'none-unsafe';

export interface WriteFlags {
  /** Force unit access: the data is on stable storage when the call resolves. */
  readonly fua?: boolean;
}

export interface ZeroFlags extends WriteFlags {
  /** The range may be deallocated (it reads as zeros afterwards either way). */
  readonly mayUnmap?: boolean;
  /** Fail with ENOTSUP instead of writing zeros slowly. */
  readonly fastZero?: boolean;
}

/** What lies below a layer, as the layer sees it: something it can read. */
export interface BackingSource {
  /** Virtual size of the backing node. Reads past it are zeros, decided by the overlay. */
  readonly length: number;
  /** Fills `buf` with the backing node's content at `offset` (the whole chain below). */
  read(offset: number, buf: Uint8Array): Promise<void>;
  /**
   * True when block status says the whole range reads as zeros (without reading
   * data; past the end counts as zeros). QEMU's bdrv_co_is_zero_fast.
   */
  isZero?(offset: number, length: number): Promise<boolean>;
}

/** How a layer records its backing file (qcow2 header; ploop descriptor). */
export interface BackingReference {
  /** The name as stored in the image, possibly relative to the image's directory. */
  readonly filename: string;
  /** The format named in the image, when it names one. */
  readonly format: FormatName | null;
}

/**
 * One extent of a single layer's allocation map.
 * - allocated=false: this layer does not define the range; it reads from the backing (or zeros).
 * - allocated=true, zero=true: reads as zeros without consulting the backing.
 * - data=true: bytes are stored in this layer (at `hostOffset` in `hostFile` when uncompressed).
 */
export interface LayerExtent {
  readonly length: number;
  readonly allocated: boolean;
  readonly zero: boolean;
  readonly data: boolean;
  /** Byte offset in the host file holding the data; absent for compressed or unmapped ranges. */
  readonly hostOffset?: number;
  /** The host file that holds the data when it is not the image file (qcow2 data_file). */
  readonly hostFile?: string;
  readonly compressed?: boolean;
}

/**
 * Where a layer keeps the start of a guest range, for a copy between host
 * files (BlockDriver.hostExtent):
 * - host: the first `range.length` bytes lie as they are at `range`;
 * - backing: this layer does not define the first `length` bytes;
 * - other: zeros, compressed or in flight: read them the usual way.
 */
export type HostExtent =
  | { readonly kind: 'host'; readonly range: HostRange }
  | { readonly kind: 'backing'; readonly length: number }
  | { readonly kind: 'other' };

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export interface SnapshotInfo {
  readonly id: string;
  readonly name: string;
  readonly vmStateSize: number;
  readonly dateSec: number;
  readonly dateNsec: number;
  readonly vmClockNsec: number;
  readonly icount?: number;
}

/** What `qemu-img info` prints about one layer, as far as the format knows it. */
export interface FormatInfo {
  readonly format: FormatName;
  readonly virtualSize: number;
  readonly clusterSize?: number;
  readonly dirtyFlag?: boolean;
  readonly encrypted?: boolean;
  readonly backing?: BackingReference;
  readonly snapshots?: readonly SnapshotInfo[];
  /** `format-specific` of qemu-img info JSON: `{ type, data }`. */
  readonly formatSpecific?: { readonly type: string; readonly data: { readonly [key: string]: JsonValue } };
}

/** What `qemu-img check` reports. */
export interface CheckReport {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset?: number;
  totalClusters?: number;
  allocatedClusters?: number;
  fragmentedClusters?: number;
  compressedClusters?: number;
  /** Human-readable findings, printed by `check` in qemu-img's wording. */
  messages: string[];
}

export type RepairMode = 'none' | 'leaks' | 'all';

export interface SnapshotCreateOptions {
  readonly name: string;
  /** Creation time; now when absent. */
  readonly dateSec?: number;
  readonly dateNsec?: number;
  /** Guest clock at the snapshot (0 for offline snapshots, as qemu-img writes). */
  readonly vmClockNsec?: number;
}

/** Internal snapshots of an image (qcow2), as `qemu-img snapshot` uses them. */
export interface SnapshotOps {
  list(): Promise<SnapshotInfo[]>;
  /** Snapshots the current state under a new id (the highest id + 1). */
  create(options: SnapshotCreateOptions): Promise<SnapshotInfo>;
  /** Reverts the disk to the snapshot whose id, else whose name, is `idOrName` (ENOENT when none). */
  apply(idOrName: string): Promise<void>;
  /** Deletes the first snapshot matching the given id and/or name (ENOENT when none). */
  delete(target: { readonly id?: string; readonly name?: string }): Promise<void>;
}

/** One persistent dirty bitmap, as `qemu-img info` lists it. */
export interface BitmapInfo {
  readonly name: string;
  readonly granularity: number;
  /** qemu's flag names: 'in-use', 'auto'. */
  readonly flags: readonly string[];
}

/** Where `BitmapOps.merge` takes its source bitmap from. */
export interface BitmapMergeSource {
  readonly name: string;
  /** Another image's bitmap; this image's when absent. */
  readonly image?: { readonly bitmaps?: BitmapOps | undefined };
}

/** Persistent dirty bitmaps of an image (qcow2), as `qemu-img bitmap` uses them. */
export interface BitmapOps {
  /** The image can hold persistent bitmaps (a qcow2 v2 image cannot). */
  canStore(): boolean;
  list(): Promise<BitmapInfo[]>;
  add(name: string, options?: { readonly granularity?: number; readonly disabled?: boolean }): Promise<void>;
  remove(name: string): Promise<void>;
  clear(name: string): Promise<void>;
  enable(name: string): Promise<void>;
  disable(name: string): Promise<void>;
  /** ORs the source bitmap into `target`. */
  merge(target: string, source: BitmapMergeSource): Promise<void>;
  /** The bitmap's bits, one per `granularity` bytes of the disk (LSB first in each byte). */
  readBits(name: string): Promise<{ readonly granularity: number; readonly bits: Uint8Array }>;
}

/** Called by long operations with bytes (or steps) done and the total. */
export type ProgressCallback = (done: number, total: number) => void;

/** How the block layer asks a driver to open its backing layer (always read-only). */
export interface BackingOpenOptions {
  readonly cache?: CacheMode;
  readonly forceShare?: boolean;
}

export interface BlockDriver {
  readonly format: FormatName;
  /** The image file's path as given. */
  readonly filename: string;
  readonly readOnly: boolean;
  /** Virtual size in bytes. */
  readonly length: number;
  /** The backing reference recorded in the image, if any. */
  readonly backingRef: BackingReference | null;
  /** Alignment of requests this format handles without read-modify-write (bytes). */
  readonly requestAlignment: number;
  /**
   * False when a freshly created image of this kind need not read as zeros
   * (QEMU's has_zero_init): raw on a device keeps what the device held, so a
   * copy into it must write its zeros too. Absent: a new image reads as zeros.
   */
  readonly createdZeroed?: boolean;
  /** Attaches the opened backing node (the block layer resolves `backingRef`). */
  setBacking(backing: BackingSource | null): void;
  /**
   * Opens the backing layer itself, for formats whose backing is not named by a
   * file alone (a ploop delta in a DiskDescriptor.xml stack knows the deltas below
   * it). When absent, the block layer opens `backingRef` by name.
   */
  openBacking?(options: BackingOpenOptions): Promise<BlockDriver>;

  read(offset: number, buf: Uint8Array): Promise<void>;
  write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void>;
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  /**
   * Where this layer keeps the start of [offset, offset+length) (see
   * HostExtent). A block job copies such a range into another image with
   * `writeFromHost`, without the bytes passing through JS.
   */
  hostExtent?(offset: number, length: number): Promise<HostExtent>;
  /**
   * The host range holding all of [offset, offset+length) right now, when it
   * is plain data of this layer in one run of one host file, with no write in
   * flight that would change where it is; null for anything else (zeros,
   * backing, compressed, metadata not cached, a corrupt entry: `read` deals
   * with those). Synchronous and without I/O, so a caller can hand the range
   * to the kernel (a socket's sendfile) before anything moves.
   */
  hostRangeNow?(offset: number, length: number): HostRange | null;
  /**
   * Writes `src.length` bytes at `offset` as `write` would, taking them from a
   * host range (copied by the kernel); false, having written nothing, when
   * this layer's host file cannot copy from that file.
   */
  writeFromHost?(offset: number, src: HostRange, flags?: WriteFlags): Promise<boolean>;
  /**
   * Bulk copy into a layer that reads as zeros at every run (a fresh convert
   * target): each run's host range lands at guest `offset`, aligned blocks of
   * `zeroBlock` bytes of zeros are left out. The bytes written, or null,
   * having written nothing, when this layer or its host cannot.
   */
  writeRunsFromHost?(runs: readonly GuestCopyRun[], zeroBlock: number): Promise<number | null>;
  /** Writes whole clusters compressed; only formats that support it define it. */
  writeCompressed?(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;

  /** Allocation of this layer alone over [offset, offset+length); extents cover the range exactly. */
  blockStatus(offset: number, length: number): Promise<LayerExtent[]>;

  resize(newLength: number, options?: { readonly shrink?: boolean; readonly preallocation?: string }): Promise<void>;
  info(): Promise<FormatInfo>;
  check(repair: RepairMode): Promise<CheckReport>;
  close(): Promise<void>;

  /** Internal snapshots, for formats that have them. */
  readonly snapshots?: SnapshotOps | undefined;
  /** Persistent dirty bitmaps, for formats that have them. */
  readonly bitmaps?: BitmapOps | undefined;
  /**
   * Rewrites the backing reference recorded in the image (qemu-img rebase), or
   * removes it with null. Only the reference changes; the caller attaches the
   * new backing node. Formats that cannot record a backing do not define it.
   */
  changeBackingFile?(ref: BackingReference | null): Promise<void>;
  /** Changes format options of an existing image (qemu-img amend); `-o` options as given. */
  amend?(options: Readonly<Record<string, string>>, progress?: ProgressCallback): Promise<void>;
}
