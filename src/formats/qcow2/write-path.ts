/**
 * Allocating writes: one L2 table at a time under that table's slot lock.
 * Clusters with COPIED set are rewritten in place; everything else gets a new
 * cluster with head/tail COW (subcluster-granular with extended L2), written
 * with one vectored write per host-contiguous run.
 *
 * Crash-safe order (FACTS.md 2.1): data (incl. COW) → refcount blocks (the L2
 * cache depends on the refcount cache, and on a sync after COW data) → L2
 * entries → L1 entry (new L2 tables are written and synced before the L1 entry
 * pointing at them). Old clusters are dereferenced after their L2 entry changed
 * (the refcount cache then depends on the L2 cache).
 */
import { VdiskError } from '../../errors.js';
import { ALL_SUBCLUSTERS, subclusterState, writeL1Entry, writeL2Entry, type L2Mapping } from './l2-entry.js';
import {
  l2Chunks,
  l2IndexOf,
  l2OffsetAt,
  mappingAt,
  readBacking,
  readCompressed,
  withSlotLock,
  type Qcow2Image,
} from './image.js';
import type { CachedTable } from './table-cache.js';

/** The L2 table for `l1Index`, allocated or copied (if shared) so it can be changed. Lock 1. */
export async function acquireL2ForWrite(img: Qcow2Image, l1Index: number): Promise<CachedTable> {
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

interface ClusterPlan {
  readonly index: number;
  /** Guest offset of the cluster. */
  readonly guestCluster: number;
  readonly old: L2Mapping;
  readonly inPlace: boolean;
  /** Intra-cluster range written by the request. */
  readonly a: number;
  readonly b: number;
  host: number;
}

function hostOf(m: L2Mapping): number | null {
  switch (m.kind) {
    case 'normal':
    case 'zero-alloc':
      return m.hostOffset;
    case 'subclusters':
      return m.hostOffset;
    default:
      return null;
  }
}

function copiedOf(m: L2Mapping): boolean {
  return (m.kind === 'normal' || m.kind === 'zero-alloc' || m.kind === 'subclusters') && m.copied;
}

/** Reads intra-cluster [x, y) of a cluster as it currently reads in the guest. */
async function readOld(img: Qcow2Image, plan: ClusterPlan, range: { x: number; y: number }, decompressed: { buf: Uint8Array | null }): Promise<Uint8Array> {
  const out = new Uint8Array(range.y - range.x);
  const m = plan.old;
  if (m.kind === 'compressed') {
    decompressed.buf ??= await readCompressed(img, m);
    out.set(decompressed.buf.subarray(range.x, range.y));
    return out;
  }
  const sc = img.clusterSize / img.subclusters;
  let pos = range.x;
  while (pos < range.y) {
    const i = Math.floor(pos / sc);
    const end = Math.min(range.y, (i + 1) * sc);
    const dst = out.subarray(pos - range.x, end - range.x);
    const state = subclusterState(m, img.subclusters === 1 ? 0 : i);
    const host = hostOf(m);
    if (state === 'data' && host !== null) await img.dataHost.read(dst, host + pos);
    else if (state === 'unallocated') await readBacking(img, plan.guestCluster + pos, dst);
    pos = end;
  }
  return out;
}

/** The buffers to write to the plan's host cluster, from intra offset `start`. */
async function buildClusterWrite(img: Qcow2Image, plan: ClusterPlan, data: Uint8Array): Promise<{ start: number; bufs: Uint8Array[]; end: number }> {
  const sc = img.clusterSize / img.subclusters;
  const scIndex = (i: number): number => (img.subclusters === 1 ? 0 : i);
  const iA = Math.floor(plan.a / sc);
  const iB = Math.floor((plan.b - 1) / sc);
  const dec = { buf: null as Uint8Array | null };
  const segs: { x: number; bytes: Uint8Array }[] = [];
  const needsFill = (i: number): boolean => !(plan.inPlace && subclusterState(plan.old, scIndex(i)) === 'data');
  // Subclusters before the write that must move with the cluster.
  if (!plan.inPlace) {
    for (let i = 0; i < iA; i++) {
      const s = subclusterState(plan.old, i);
      if (s === 'data' || s === 'compressed') segs.push({ x: i * sc, bytes: await readOld(img, plan, { x: i * sc, y: (i + 1) * sc }, dec) });
    }
  }
  if (plan.a % sc !== 0 && needsFill(iA)) segs.push({ x: iA * sc, bytes: await readOld(img, plan, { x: iA * sc, y: plan.a }, dec) });
  segs.push({ x: plan.a, bytes: data });
  if (plan.b % sc !== 0 && needsFill(iB)) segs.push({ x: plan.b, bytes: await readOld(img, plan, { x: plan.b, y: (iB + 1) * sc }, dec) });
  if (!plan.inPlace) {
    for (let i = iB + 1; i < img.subclusters; i++) {
      const s = subclusterState(plan.old, i);
      if (s === 'data' || s === 'compressed') segs.push({ x: i * sc, bytes: await readOld(img, plan, { x: i * sc, y: (i + 1) * sc }, dec) });
    }
  }
  const bufs: Uint8Array[] = [];
  const first = segs[0];
  let pos = first ? first.x : plan.a;
  for (const s of segs) {
    if (s.x > pos) bufs.push(new Uint8Array(s.x - pos)); // gap between moved subclusters
    bufs.push(s.bytes);
    pos = s.x + s.bytes.length;
  }
  return { start: first ? first.x : plan.a, bufs, end: pos };
}

/** The mapping after writing [a, b) of a cluster at `host`. */
function newMapping(img: Qcow2Image, plan: ClusterPlan): L2Mapping {
  if (img.subclusters === 1) return { kind: 'normal', hostOffset: plan.host, copied: true };
  const sc = img.clusterSize / img.subclusters;
  const iA = Math.floor(plan.a / sc);
  const iB = Math.floor((plan.b - 1) / sc);
  let alloc = 0;
  let zero = 0;
  for (let i = 0; i < img.subclusters; i++) {
    const bit = (1 << i) >>> 0;
    if (i >= iA && i <= iB) {
      alloc |= bit;
      continue;
    }
    const s = subclusterState(plan.old, i);
    if (s === 'data' || s === 'compressed') alloc |= bit;
    else if (s === 'zero') zero |= bit;
  }
  alloc >>>= 0;
  zero >>>= 0;
  if (alloc === ALL_SUBCLUSTERS) return { kind: 'normal', hostOffset: plan.host, copied: true };
  return { kind: 'subclusters', hostOffset: plan.host, copied: true, allocMask: alloc, zeroMask: zero };
}

/** Writes `data` at guest `offset`. */
export async function writeGuest(img: Qcow2Image, offset: number, data: Uint8Array): Promise<void> {
  for (const chunk of l2Chunks(img, offset, data.length)) {
    await withSlotLock(img, chunk.l1Index, async () => {
      const table = await acquireL2ForWrite(img, chunk.l1Index);
      try {
        await writeChunk(img, table, { offset: chunk.offset, data: data.subarray(chunk.offset - offset, chunk.offset - offset + chunk.length) });
      } finally {
        img.l2Cache.release(table);
      }
    });
  }
}

async function writeChunk(img: Qcow2Image, table: CachedTable, req: { offset: number; data: Uint8Array }): Promise<void> {
  const plans: ClusterPlan[] = [];
  const end = req.offset + req.data.length;
  const dataFile = img.geometry.externalDataFile;
  for (let pos = req.offset; pos < end; ) {
    const guestCluster = pos - (pos % img.clusterSize);
    const cEnd = Math.min(end, guestCluster + img.clusterSize);
    const index = l2IndexOf(img, pos);
    const old = mappingAt(img, table, index);
    const oldHost = hostOf(old);
    const inPlace = oldHost !== null && copiedOf(old);
    plans.push({ index, guestCluster, old, inPlace, a: pos - guestCluster, b: cEnd - guestCluster, host: inPlace ? oldHost : -1 });
    pos = cEnd;
  }
  const fresh = plans.filter((p) => !p.inPlace);
  if (fresh.length > 0) {
    if (dataFile) {
      for (const p of fresh) p.host = p.guestCluster;
    } else {
      const base = await img.refcounts.allocClusters(fresh.length);
      fresh.forEach((p, k) => (p.host = base + k * img.clusterSize));
    }
  }
  // Build the host writes, merging host-contiguous clusters into one writev.
  const groups: { host: number; bufs: Uint8Array[] }[] = [];
  let prevEnd = -1;
  for (const p of plans) {
    const w = await buildClusterWrite(img, p, req.data.subarray(p.guestCluster + p.a - req.offset, p.guestCluster + p.b - req.offset));
    const last = groups[groups.length - 1];
    if (last && prevEnd === p.host + w.start) last.bufs.push(...w.bufs);
    else groups.push({ host: p.host + w.start, bufs: w.bufs });
    prevEnd = p.host + w.end;
  }
  await Promise.all(groups.map((g) => (g.bufs.length === 1 && g.bufs[0] ? img.dataHost.write(g.bufs[0], g.host) : img.dataHost.writev(g.bufs, g.host))));
  // Link: refcounts of new clusters (and COW data) reach the disk before these entries.
  if (fresh.length > 0) {
    if (!dataFile) await img.l2Cache.setDependency(img.refcounts.cache);
    img.l2Cache.requireSyncBeforeWrite();
  }
  const toFree: L2Mapping[] = [];
  let changed = false;
  for (const p of plans) {
    const m = newMapping(img, p);
    if (!p.inPlace || m.kind !== p.old.kind || (m.kind === 'subclusters' && p.old.kind === 'subclusters' && (m.allocMask !== p.old.allocMask || m.zeroMask !== p.old.zeroMask))) {
      writeL2Entry(table.data, p.index, m, img.geometry);
      changed = true;
    }
    if (!p.inPlace && (hostOf(p.old) !== null || p.old.kind === 'compressed')) toFree.push(p.old);
  }
  if (changed) img.l2Cache.markDirty(table);
  await releaseMappings(img, toFree);
}

/** Drops one reference from each old mapping's clusters, after the L2 change. */
export async function releaseMappings(img: Qcow2Image, old: readonly L2Mapping[]): Promise<void> {
  if (old.length === 0 || img.geometry.externalDataFile) return;
  await img.refcounts.cache.setDependency(img.l2Cache);
  for (const m of old) {
    if (m.kind === 'compressed') {
      const start = m.hostOffset - (m.hostOffset % 512);
      await img.refcounts.free(start, m.sectors * 512);
    } else {
      const h = hostOf(m);
      if (h !== null) await img.refcounts.free(h, img.clusterSize);
    }
  }
}
