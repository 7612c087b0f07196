import type { BlockDriver, CacheMode, FormatName } from './driver.js';

/** How a driver opens its image file. */
export interface DriverOpenOptions {
  readonly readOnly: boolean;
  readonly cache?: CacheMode;
  /** Open even if another process holds the image (qemu-img -U). */
  readonly forceShare?: boolean;
  /** The image's only user is one copy loop: see HostOpenOptions.inlineIo (ignored with O_DIRECT). */
  readonly inlineIo?: boolean;
  /** qcow2: skip the repair a dirty/lazy-refcount image would get on a read-write open. */
  readonly noRepair?: boolean;
  /** qcow2's runtime options by QEMU's names (checked against the header at open); other formats ignore them. */
  readonly qcow2Tuning?: Qcow2Tuning;
}

/** qcow2's runtime options, parsed (qcow2/runtime-options.ts applies them). */
export interface Qcow2Tuning {
  /** l2-cache-size, bytes. */
  readonly l2CacheSize?: number;
  /** refcount-cache-size, bytes. */
  readonly refcountCacheSize?: number;
  /** cache-size: both caches, split as QEMU splits it. */
  readonly cacheSize?: number;
  /** l2-cache-entry-size: checked; whole tables are cached whatever it says. */
  readonly l2CacheEntrySize?: number;
  /** lazy-refcounts: must match the image's bit on a writable open. */
  readonly lazyRefcounts?: boolean;
}

/** Options of `create`, as qemu-img create -o spells them, parsed. */
export interface CreateOptions {
  readonly size: number;
  /** Remaining -o options, keyed by qemu's names (cluster_size, compat, ...), as strings. */
  readonly options: Readonly<Record<string, string>>;
  readonly backingFile?: string;
  readonly backingFormat?: FormatName;
}

/** What each format module exports to the registry. */
export interface FormatModule {
  readonly name: FormatName;
  /** Recognises the format from the first bytes of the file (at least 512); raw never probes. */
  probe(head: Uint8Array): boolean;
  open(path: string, options: DriverOpenOptions): Promise<BlockDriver>;
  create(path: string, options: CreateOptions): Promise<void>;
}
