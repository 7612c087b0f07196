/**
 * Changing L2 tables for guest writes: the table of an L1 entry made
 * writable (allocated, or copied when shared), and the link of a record
 * once its data landed (its L2 entry written, the cluster it replaced
 * dereferenced). Crash-safe order as in write-path.ts: refcounts before the
 * L2 entry, the L2 change before the old clusters' references drop.
 */
import { VdiskError } from '../../errors.js';
import { writeL1Entry, writeL2Entry, type L2Mapping } from './l2-entry.js';
import { hostOf, newMapping } from './cow.js';
import { l2OffsetAt, mappingAt, type Qcow2Image } from './image.js';
import type { ClusterAllocation } from './inflight.js';
import type { CachedTable } from './table-cache.js';

/** The L2 table for `l1Index`, allocated or copied (if shared) so it can be changed. Lock 1 when it must change. */
export async function acquireL2ForWrite(img: Qcow2Image, l1Index: number): Promise<CachedTable> {
  // Fast path without the L1 lock: a COPIED table only changes under it by shrink.
  const fast = l2OffsetAt(img, l1Index);
  if (fast.l2Offset !== 0 && fast.copied) return img.l2Cache.acquire(fast.l2Offset);
  return img.l1Lock.run(async () => {
    const { l2Offset, copied } = l2OffsetAt(img, l1Index);
    if (l2Offset !== 0 && copied) return img.l2Cache.acquire(l2Offset);
    if (l1Index >= img.l1.length / 8) {
      throw new VdiskError('ECORRUPT', `'${img.file}': L1 index ${l1Index} beyond the L1 table (${img.l1.length / 8} entries)`, { file: img.file });
    }
    const newOffset = await img.refcounts.allocClusters(1);
    let content: Uint8Array | null = null;
    if (l2Offset !== 0) {
      const old = await img.l2Cache.acquire(l2Offset);
      content = old.data.slice();
      img.l2Cache.release(old);
    }
    const table = await img.l2Cache.acquire(newOffset, true);
    try {
      if (content) table.data.set(content);
      img.l2Cache.markDirty(table);
      // The new table's refcount first, then the table itself, then the L1 entry.
      await img.l2Cache.setDependency(img.refcounts.cache);
      await img.l2Cache.flushWithDependencies();
      writeL1Entry(img.l1, l1Index, newOffset, true);
      await img.host.write(img.l1.slice(l1Index * 8, l1Index * 8 + 8), img.l1Offset + l1Index * 8);
      await img.host.sync();
    } catch (e) {
      img.l2Cache.release(table);
      throw e;
    }
    if (l2Offset !== 0) {
      img.l2Cache.forget(l2Offset);
      await img.refcounts.free(l2Offset, img.clusterSize);
    }
    return table;
  });
}

/** The COPIED L2 table of `l1Index` when it is cached (pinned), without an await; else null. */
export function acquireCopiedL2Now(img: Qcow2Image, l1Index: number): CachedTable | null {
  const { l2Offset, copied } = l2OffsetAt(img, l1Index);
  return l2Offset !== 0 && copied ? img.l2Cache.acquireCached(l2Offset) : null;
}

/**
 * Writes the record's L2 entry, then drops the cluster it replaced. Done at
 * once (null) in the common case of a convert or a first write: table cached,
 * refcounts already ordered before it, nothing replaced. One link per cluster,
 * so the promise and closures of the general path are kept for the rest.
 */
export function linkRecord(img: Qcow2Image, rec: ClusterAllocation): Promise<void> | null {
  const refcountsFirst = !rec.inPlace && !img.geometry.externalDataFile;
  if (replacesCluster(rec) || (refcountsFirst && !img.l2Cache.dependsOnSettled(img.refcounts.cache))) return linkRecordLater(img, rec, refcountsFirst);
  const table = acquireCopiedL2Now(img, rec.l1Index);
  if (table === null) return linkRecordLater(img, rec, refcountsFirst);
  try {
    writeRecordEntry(img, rec, table);
  } finally {
    img.l2Cache.release(table);
  }
  return null;
}

async function linkRecordLater(img: Qcow2Image, rec: ClusterAllocation, refcountsFirst: boolean): Promise<void> {
  const table = acquireCopiedL2Now(img, rec.l1Index) ?? (await acquireL2ForWrite(img, rec.l1Index));
  try {
    // Refcounts of new clusters (and the COW data) reach the disk before this entry.
    if (refcountsFirst && !img.l2Cache.dependsOnSettled(img.refcounts.cache)) await img.l2Cache.setDependency(img.refcounts.cache);
    writeRecordEntry(img, rec, table);
  } finally {
    img.l2Cache.release(table);
  }
  if (replacesCluster(rec)) await releaseMappings(img, [rec.old]);
}

/** The record's cluster takes the place of another one, whose reference the link drops. */
function replacesCluster(rec: ClusterAllocation): boolean {
  return !rec.inPlace && (hostOf(rec.old) !== null || rec.old.kind === 'compressed');
}

function writeRecordEntry(img: Qcow2Image, rec: ClusterAllocation, table: CachedTable): void {
  const index = rec.cluster % img.l2Entries;
  const base = rec.inPlace ? mappingAt(img, table, index) : rec.old;
  const m = newMapping(img, base, { a: rec.dataStart, b: rec.tailStart, host: rec.host });
  img.l2Cache.requireSyncBeforeWrite();
  writeL2Entry(table.data, index, m, img.geometry);
  img.l2Cache.markDirty(table);
}

/** Drops one reference from each old mapping's clusters, after the L2 change. */
export async function releaseMappings(img: Qcow2Image, old: readonly L2Mapping[]): Promise<void> {
  if (old.length === 0 || img.geometry.externalDataFile) return;
  await img.refcounts.cache.setDependency(img.l2Cache);
  // Host-contiguous clusters are freed as one run: one lock and one refcount-block
  // visit per run, not per cluster (emptying a 1 GiB top after commit freed 16384 one by one).
  let run: { start: number; length: number } | null = null;
  for (const m of old) {
    if (m.kind === 'compressed') {
      const start = m.hostOffset - (m.hostOffset % 512);
      await img.refcounts.free(start, m.sectors * 512);
      continue;
    }
    const h = hostOf(m);
    if (h === null) continue;
    if (run && run.start + run.length === h) {
      run.length += img.clusterSize;
      continue;
    }
    if (run) await img.refcounts.free(run.start, run.length);
    run = { start: h, length: img.clusterSize };
  }
  if (run) await img.refcounts.free(run.start, run.length);
}
