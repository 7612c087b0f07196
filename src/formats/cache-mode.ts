/**
 * What a cache mode (qemu-img -t) means for a format driver, as QEMU's
 * bdrv_parse_cache_mode defines it:
 *   writeback    page cache, flush = write tables + fdatasync (the default)
 *   none         O_DIRECT (where the file system allows it), flush as writeback
 *   unsafe       page cache, flush writes tables but never syncs
 *   writethrough page cache, every write is flushed before it completes
 *   directsync   O_DIRECT and every write flushed before it completes
 *   none-unsafe  O_DIRECT, flush as unsafe (cache.direct=on,cache.no-flush=on)
 */
import type { HostFile } from '../host/host-file.js';
import type { CacheMode } from './driver.js';

export interface CachePolicy {
  /** Open the host files with O_DIRECT. */
  readonly direct: boolean;
  /** flush() ends with a host sync. */
  readonly syncOnFlush: boolean;
  /** Every write, zero and discard is followed by a flush (as if FUA). */
  readonly flushEachWrite: boolean;
}

/** The three switches a cache mode stands for (bdrv_parse_cache_mode: cache.direct, cache.no-flush, and the write cache off). */
export interface CacheFlags {
  readonly direct: boolean;
  readonly noFlush: boolean;
  readonly writethrough: boolean;
}

const FLAGS: Readonly<Record<CacheMode, CacheFlags>> = {
  writeback: { direct: false, noFlush: false, writethrough: false },
  none: { direct: true, noFlush: false, writethrough: false },
  unsafe: { direct: false, noFlush: true, writethrough: false },
  directsync: { direct: true, noFlush: false, writethrough: true },
  writethrough: { direct: false, noFlush: false, writethrough: true },
  'none-unsafe': { direct: true, noFlush: true, writethrough: false },
};

export function cacheFlags(mode: CacheMode | undefined): CacheFlags {
  return FLAGS[mode ?? 'writeback'];
}

/**
 * The cache mode with these switches. With no-flush, writethrough changes
 * nothing: the flush after each write is the one that does nothing.
 */
export function cacheModeOf(flags: CacheFlags): CacheMode {
  const writethrough = flags.writethrough && !flags.noFlush;
  for (const [mode, f] of Object.entries(FLAGS) as [CacheMode, CacheFlags][]) {
    if (f.direct === flags.direct && f.noFlush === flags.noFlush && f.writethrough === writethrough) return mode;
  }
  throw new Error(`no cache mode for direct=${flags.direct}, no-flush=${flags.noFlush}, writethrough=${flags.writethrough}`);
}

export function cachePolicy(mode: CacheMode | undefined): CachePolicy {
  const f = cacheFlags(mode);
  return { direct: f.direct, syncOnFlush: !f.noFlush, flushEachWrite: f.writethrough };
}

/**
 * The host file as cache=unsafe sees it: syncs (the engine's ordering syncs
 * included, as QEMU's BDRV_O_NO_FLUSH) do nothing.
 */
export function withoutSync(host: HostFile): HostFile {
  // The kernel copy (copy_file_range) goes through too: convert's target is unsafe by default.
  const copy = host.canCopyFrom && host.copyFrom ? { canCopyFrom: host.canCopyFrom.bind(host), copyFrom: host.copyFrom.bind(host) } : {};
  // And the bulk copy of a convert (copyRunsFrom).
  const runs = host.copyRunsFrom ? { copyRunsFrom: host.copyRunsFrom.bind(host) } : {};
  // And its packed form, for a target that places the data itself (qcow2).
  const packed = host.copyRunsPackedFrom ? { copyRunsPackedFrom: host.copyRunsPackedFrom.bind(host) } : {};
  return {
    ...copy,
    ...runs,
    ...packed,
    get path() {
      return host.path;
    },
    get readOnly() {
      return host.readOnly;
    },
    get device() {
      return host.device === true;
    },
    size: () => host.size(),
    read: (buf, offset) => host.read(buf, offset),
    write: (buf, offset) => host.write(buf, offset),
    writev: (bufs, offset) => host.writev(bufs, offset),
    sync: () => Promise.resolve(),
    truncate: (length) => host.truncate(length),
    punchHole: (offset, length) => host.punchHole(offset, length),
    zeroRange: (offset, length) => host.zeroRange(offset, length),
    allocate: (offset, length) => host.allocate(offset, length),
    seekData: (offset) => host.seekData(offset),
    seekHole: (offset) => host.seekHole(offset),
    allocatedSize: () => host.allocatedSize(),
    close: () => host.close(),
  };
}
