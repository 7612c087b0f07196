/**
 * The state of one opened qcow2 image and the mapping helpers every path
 * shares: the in-memory L1 table, the L2-table cache, the refcounts, the
 * compression codec and the backing.
 *
 * Lock order (outermost first), enforced by the code paths in this folder:
 *   1. `l1Lock`          — changes of L1 entries (new or copied L2 tables, L1 growth);
 *                          not taken when the L2 table is already COPIED
 *   2. an L2 table lock  — `slotLock(l1Index)`: zero/discard/compressed rewrites of one
 *                          L2 table's entries. Guest writes do not take it: they plan
 *                          synchronously (no await) and never hold a lock across data I/O
 *   3. `refcounts.allocLock` — the refcount allocator (innermost; never waits for 1 or 2)
 * Per-cluster ordering of writes is by in-flight allocation records (`inflight`,
 * inflight.ts), waited for with no lock held.
 * Cache writeback takes no lock (tables are snapshotted synchronously).
 * Readers take no lock.
 */
import { VdiskError } from '../../errors.js';
import type { HostFile } from '../../host/host-file.js';
import { AsyncLock } from '../../util/async-lock.js';
import { hex } from '../../util/int64.js';
import type { BackingSource } from '../driver.js';
import type { ClusterCodec } from './compression.js';
import type { InflightTable } from './inflight.js';
import { readL1EntryOf, readL2Entry, type L1Mapping, type L2Geometry, type L2Mapping } from './l2-entry.js';
import type { Refcounts } from './refcounts.js';
import type { CachedTable, TableCache } from './table-cache.js';

export interface Qcow2Image {
  readonly file: string;
  readonly host: HostFile;
  /** Where guest data lives: the image file or the external data file. */
  readonly dataHost: HostFile;
  readonly geometry: L2Geometry;
  readonly clusterBits: number;
  readonly clusterSize: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  /** 32 with extended L2, else 1. */
  readonly subclusters: number;
  readonly version: 2 | 3;
  /** External data file with the raw bit: zeroing must really write zeros. */
  readonly dataFileRaw: boolean;
  size: number;
  l1: Uint8Array;
  l1Offset: number;
  readonly l1Lock: AsyncLock;
  readonly l2Cache: TableCache;
  readonly refcounts: Refcounts;
  readonly codec: ClusterCodec;
  backing: BackingSource | null;
  readonly slotLocks: Map<number, { lock: AsyncLock; users: number }>;
  /** Cluster allocations in flight, per guest cluster. */
  readonly inflight: InflightTable;
}

export function l1Entries(img: Qcow2Image): number {
  return img.l1.length / 8;
}

/** The L2 table offset for `l1Index`, 0 when none. */
export function l2OffsetAt(img: Qcow2Image, l1Index: number): L1Mapping {
  if (l1Index >= l1Entries(img)) return NO_L2_TABLE;
  return readL1EntryOf(img.l1, l1Index, img.clusterBits, img.file, img.l1Offset);
}

const NO_L2_TABLE: L1Mapping = Object.freeze({ l2Offset: 0, copied: false });

/** Pins the L2 table of `l1Index` for reading; null when the L1 entry is empty. */
export async function acquireL2(img: Qcow2Image, l1Index: number): Promise<CachedTable | null> {
  const { l2Offset } = l2OffsetAt(img, l1Index);
  if (l2Offset === 0) return null;
  return img.l2Cache.acquire(l2Offset);
}

export function mappingAt(img: Qcow2Image, table: CachedTable, index: number): L2Mapping {
  return readL2Entry(table.data, index, { geometry: img.geometry, file: img.file, tableOffset: table.offset });
}

/** Runs `fn` holding the lock of the L2 slot `l1Index` (lock 2 of the order). */
export async function withSlotLock<T>(img: Qcow2Image, l1Index: number, fn: () => Promise<T>): Promise<T> {
  let slot = img.slotLocks.get(l1Index);
  if (!slot) {
    slot = { lock: new AsyncLock(), users: 0 };
    img.slotLocks.set(l1Index, slot);
  }
  slot.users++;
  try {
    return await slot.lock.run(fn);
  } finally {
    slot.users--;
    if (slot.users === 0) img.slotLocks.delete(l1Index);
  }
}

/** Reads from the backing into `buf` (guest `offset`); zeros where there is no backing. */
export async function readBacking(img: Qcow2Image, offset: number, buf: Uint8Array): Promise<void> {
  const b = img.backing;
  const inBacking = b === null ? 0 : Math.max(0, Math.min(buf.length, b.length - offset));
  if (b !== null && inBacking > 0) await b.read(offset, buf.subarray(0, inBacking));
  buf.fill(0, inBacking);
}

/** Decompresses the cluster of a compressed mapping. */
export async function readCompressed(img: Qcow2Image, m: { readonly hostOffset: number; readonly sizeBytes: number }): Promise<Uint8Array> {
  const fileSize = await img.host.size();
  if (m.hostOffset >= fileSize) {
    throw new VdiskError('ECORRUPT', `'${img.file}': compressed cluster at ${hex(m.hostOffset)} lies past the end of the file (size ${hex(fileSize)})`, {
      file: img.file,
      offset: m.hostOffset,
    });
  }
  const slot = new Uint8Array(Math.min(m.sizeBytes, fileSize - m.hostOffset));
  await img.host.read(slot, m.hostOffset);
  return img.codec.decompress(slot, { file: img.file, offset: m.hostOffset });
}

/** Splits [offset, offset+length) at L2-table boundaries. */
export function* l2Chunks(img: Qcow2Image, offset: number, length: number): Generator<{ l1Index: number; offset: number; length: number }> {
  const span = img.clusterSize * img.l2Entries;
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const l1Index = Math.floor(pos / span);
    const chunkEnd = Math.min(end, (l1Index + 1) * span);
    yield { l1Index, offset: pos, length: chunkEnd - pos };
    pos = chunkEnd;
  }
}

/** The clusters [first, last] of a non-empty guest range, when one L2 table maps them all; else null. */
export function clustersInOneTable(img: Qcow2Image, offset: number, length: number): { first: number; last: number; l1Index: number } | null {
  const first = Math.floor(offset / img.clusterSize);
  const last = Math.floor((offset + length - 1) / img.clusterSize);
  const l1Index = Math.floor(first / img.l2Entries);
  return Math.floor(last / img.l2Entries) === l1Index ? { first, last, l1Index } : null;
}

export function l2IndexOf(img: Qcow2Image, guestOffset: number): number {
  return Math.floor(guestOffset / img.clusterSize) % img.l2Entries;
}
