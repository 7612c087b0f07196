/**
 * The seam between the block layer and the format drivers. Every format (raw,
 * qcow2, ploop) implements `BlockDriver`; nothing outside `formats/` knows a
 * format's tables. A driver never imports `block/`: what it needs from the
 * image below it (its backing) it sees through `BackingSource`.
 */

/** Formats vdisk can open. `parallels` is accepted as an alias of `ploop` by the probe. */
export type FormatName = 'raw' | 'qcow2' | 'ploop';

/** Cache modes as qemu-img's -t spells them. */
export type CacheMode = 'writeback' | 'none' | 'unsafe' | 'directsync' | 'writethrough';

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
  /** Attaches the opened backing node (the block layer resolves `backingRef`). */
  setBacking(backing: BackingSource | null): void;

  read(offset: number, buf: Uint8Array): Promise<void>;
  write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void>;
  writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  /** Writes whole clusters compressed; only formats that support it define it. */
  writeCompressed?(offset: number, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;

  /** Allocation of this layer alone over [offset, offset+length); extents cover the range exactly. */
  blockStatus(offset: number, length: number): Promise<LayerExtent[]>;

  resize(newLength: number, options?: { readonly shrink?: boolean; readonly preallocation?: string }): Promise<void>;
  info(): Promise<FormatInfo>;
  check(repair: RepairMode): Promise<CheckReport>;
  close(): Promise<void>;
}
