/**
 * Bulk copy into a qcow2 image that reads as zeros where the copy lands (a
 * fresh convert target): convert's data without the JS thread touching it.
 *
 * The runs go to the addon's copy engine (copyRunsPacked in copy_engine.c) a
 * group of L2 tables at a time. Before a group the JS thread allocates its new
 * tables and reserves as many clusters after them as the group's runs touch;
 * the engine's reader gathers those clusters, whole, and marks the ones with a
 * non-zero byte, and its writer writes those into the reserved clusters in
 * guest order, one after another; after the group the JS thread links the
 * clusters written and gives the rest of the reservation back. So the reads,
 * the zero checks and the writes run on two threads of their own, never
 * waiting for the JS thread in between (with the JS thread placing each 8 MiB
 * between its read and its write, on 2 cores, a 4 GiB convert copied at
 * qemu-img's pace; see bench/RESULTS.md), and the image is laid out as the copy
 * loop lays it: a new L2 table, then the data clusters of its range, clusters
 * of zeros left out.
 *
 * Dependency order is the write path's: refcounts before L2 entries, and a
 * sync of the data before the entries reach the disk.
 */
import { VdiskError } from '../../errors.js';
import { bufferView, skipZeroUnits } from '../../util/zeros.js';
import type { HostCopyRun } from '../../host/host-file.js';
import type { GuestCopyRun } from '../driver.js';
import { l2OffsetAt, mappingAt, type Qcow2Image } from './image.js';
import { CopiedEntryRun } from './l2-entry-runs.js';
import type { CachedTable } from './table-cache.js';
import { acquireCopiedL2Now, acquireL2ForWrite } from './l2-update.js';

/**
 * Guest bytes of one engine call at least, in whole L2 tables: with 64 KiB
 * clusters a table maps 512 MiB, so a group is one table, laid out as the copy
 * loop lays it; with small clusters a table maps little, and an engine call
 * per table would spend more on starting and draining than on copying.
 */
const GROUP_BYTES = 64 * 1024 * 1024;

/** The runs (at = guest offset) inside one group of L2 tables, and how many clusters they touch. */
interface Group {
  readonly index: number;
  readonly runs: HostCopyRun[];
  /** The L1 indexes the runs touch, ascending. */
  readonly tables: number[];
  clusters: number;
}

/**
 * The bulk write (BlockDriver.writeRunsFromHost for qcow2). Null, having
 * written nothing, when this image cannot take it so: extended L2 entries
 * (subcluster allocation follows each write), a backing file or an external
 * data file, a host without the addon's engine, a zero block that does not
 * divide the cluster, or a cluster of the copy already allocated or in flight.
 */
export async function writeRunsInBulk(img: Qcow2Image, runs: readonly GuestCopyRun[], zeroBlock: number): Promise<number | null> {
  const host = img.host;
  const cs = img.clusterSize;
  if (!host.copyRunsPackedFrom || img.dataHost !== host || img.geometry.extendedL2 || img.backing !== null) return null;
  if (zeroBlock <= 0 || cs % zeroBlock !== 0 || runs.length === 0) return null;
  const groups = groupsOf(runs, cs, img.l2Entries);
  if (!(await readsZeroThroughout(img, groups))) return null;
  let written = 0;
  for (const g of groups) {
    const count = await copyGroup(img, g);
    if (count === null) {
      if (written === 0) return null;
      throw new VdiskError('EIO', `'${img.file}': the host stopped taking the bulk copy at guest offset ${g.runs[0]?.at ?? 0}`, { file: img.file });
    }
    written += count * cs;
  }
  return written;
}

/** The runs in disk order, split at group boundaries (whole L2 tables, at least GROUP_BYTES of guest). */
function groupsOf(runs: readonly GuestCopyRun[], cs: number, l2Entries: number): Group[] {
  const tableBytes = cs * l2Entries;
  const groupBytes = Math.max(1, Math.ceil(GROUP_BYTES / tableBytes)) * tableBytes;
  const sorted = [...runs].sort((a, b) => a.offset - b.offset);
  const groups: Group[] = [];
  let g: Group | null = null;
  // The last cluster counted: a run may start in the cluster where the one before ends.
  let lastCluster = -1;
  for (const r of sorted) {
    let off = r.offset;
    let pos = r.src.offset;
    let left = r.src.length;
    while (left > 0) {
      const index = Math.floor(off / groupBytes);
      if (g === null || g.index !== index) {
        g = { index, runs: [], tables: [], clusters: 0 };
        groups.push(g);
      }
      const take = Math.min(left, (index + 1) * groupBytes - off);
      g.runs.push({ src: { file: r.src.file, offset: pos, length: take }, at: off });
      const first = Math.floor(off / cs);
      const last = Math.floor((off + take - 1) / cs);
      g.clusters += last - Math.max(first, lastCluster + 1) + 1;
      lastCluster = last;
      for (let t = Math.floor(first / l2Entries); t <= Math.floor(last / l2Entries); t++) {
        if (g.tables[g.tables.length - 1] !== t) g.tables.push(t);
      }
      off += take;
      pos += take;
      left -= take;
    }
  }
  return groups;
}

/**
 * Every cluster the runs touch is unallocated (or reads as zeros unallocated)
 * and has no allocation in flight. A table is looked up and pinned once for
 * all the runs in its range (a batch of 1,024 runs took 5 ms one by one).
 */
async function readsZeroThroughout(img: Qcow2Image, groups: readonly Group[]): Promise<boolean> {
  const cs = img.clusterSize;
  let held: { readonly l1Index: number; readonly table: CachedTable | null } | null = null;
  try {
    for (const g of groups) {
      for (const r of g.runs) {
        const first = Math.floor(r.at / cs);
        const last = Math.floor((r.at + r.src.length - 1) / cs);
        if (img.inflight.hasRecordIn(first, last)) return false;
        for (let c = first; c <= last; ) {
          const l1Index = Math.floor(c / img.l2Entries);
          const tableEnd = Math.min(last, (l1Index + 1) * img.l2Entries - 1);
          if (held === null || held.l1Index !== l1Index) {
            if (held?.table) img.l2Cache.release(held.table);
            held = null;
            const { l2Offset } = l2OffsetAt(img, l1Index);
            held = { l1Index, table: l2Offset === 0 ? null : await img.l2Cache.acquire(l2Offset) };
          }
          if (held.table && !entriesReadZero(img, held.table, c, tableEnd)) return false;
          c = tableEnd + 1;
        }
      }
    }
    return true;
  } finally {
    if (held?.table) img.l2Cache.release(held.table);
  }
}

/**
 * Guest clusters first..last of `table` are unallocated or zero without
 * allocation. Entries of zero bytes (unallocated) are passed over natively, a
 * block at a time; the others are decoded (the zero flag, an offset the image
 * does not allow).
 */
function entriesReadZero(img: Qcow2Image, table: CachedTable, first: number, last: number): boolean {
  const bytes = bufferView(table.data);
  const end = ((last % img.l2Entries) + 1) * 8;
  for (let at = (first % img.l2Entries) * 8; ; at += 8) {
    at = skipZeroUnits(bytes, at, end, 8);
    if (at >= end) return true;
    const kind = mappingAt(img, table, at / 8).kind;
    if (kind !== 'unallocated' && kind !== 'zero-plain') return false;
  }
}

/**
 * Copies one group: its new L2 tables, then a reservation of every cluster its
 * runs touch, filled in guest order with those that hold data; links them and
 * gives back the rest. The clusters written, or null when the host declined
 * before placing anything.
 */
async function copyGroup(img: Qcow2Image, g: Group): Promise<number | null> {
  const cs = img.clusterSize;
  const clusters = new Int32Array(g.clusters);
  let hostStart = 0;
  const place = async (): Promise<number> => {
    // The write path's allocation order: a new table before the data it maps.
    for (const l1Index of g.tables) img.l2Cache.release(acquireCopiedL2Now(img, l1Index) ?? (await acquireL2ForWrite(img, l1Index)));
    hostStart = (await img.refcounts.allocRun(g.clusters)).offset;
    return hostStart;
  };
  const count = await img.host.copyRunsPackedFrom?.(g.runs, cs, clusters, place);
  if (count === undefined || count === null) return null;
  // Nothing was written past the clusters used, and nothing refers to them: free at once, for the next group.
  await img.refcounts.unreserve(hostStart + count * cs, g.clusters - count);
  await linkPacked(img, Math.floor((g.runs[0]?.at ?? 0) / cs), clusters, count, hostStart);
  return count;
}

/**
 * Sets the L2 entries of the `count` clusters written from `hostStart` (in the
 * cache; refcounts and a data sync go first). The entries were unallocated (or
 * zero without allocation), and without extended L2 a new cluster's entry is
 * the same whatever it was: COPIED, at its host offset.
 */
async function linkPacked(img: Qcow2Image, firstCluster: number, clusters: Int32Array, count: number, hostStart: number): Promise<void> {
  if (count === 0) return;
  if (!img.l2Cache.dependsOnSettled(img.refcounts.cache)) await img.l2Cache.setDependency(img.refcounts.cache);
  img.l2Cache.requireSyncBeforeWrite();
  const entries = new CopiedEntryRun(hostStart, img.geometry.clusterBits);
  for (let i = 0; i < count; ) {
    const l1Index = Math.floor((firstCluster + clusters[i]!) / img.l2Entries);
    const table = acquireCopiedL2Now(img, l1Index) ?? (await acquireL2ForWrite(img, l1Index));
    try {
      i = entries.storeRun(table.data, l1Index * img.l2Entries - firstCluster, img.l2Entries, clusters, i, count);
      img.l2Cache.markDirty(table);
    } finally {
      img.l2Cache.release(table);
    }
  }
}
