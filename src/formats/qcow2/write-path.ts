/**
 * Guest writes, many in flight. Per L2 table: the table is pinned only while
 * the request is planned (synchronously, so planning is atomic); data I/O runs
 * with no table lock held. Each touched cluster is
 *  - a plain overwrite (COPIED, every touched subcluster holds data): written in place;
 *  - a new allocation or an L2 entry change: recorded in `img.inflight`
 *    (inflight.ts) until its L2 entry is written;
 *  - a cluster with such a record: the write joins it when it starts in the
 *    record's deferred tail COW (COW cancellation), else waits for that record
 *    alone and plans again.
 * Head COW, data and tail COW go out in one vectored write per host-contiguous run.
 * A stream's join and a plain overwrite that need no planning at all go
 * straight to the host (write-direct.ts).
 *
 * Crash-safe order (FACTS.md 2.1): data (incl. COW) → refcount blocks (the L2
 * cache depends on the refcount cache, and on a sync after COW data) → L2
 * entries → L1 entry (new L2 tables are written and synced before the L1 entry
 * pointing at them). Old clusters are dereferenced after their L2 entry changed
 * (the refcount cache then depends on the L2 cache).
 */
import { isHostRange, sliceBytes, writeParts, type Bytes } from '../../host/host-range.js';
import { copiedOf, cowReadsZero, headStart, hostOf, isPlainOverwrite, readOld, tailEnd, type CowSource } from './cow.js';
import { l2Chunks, l2IndexOf, mappingAt, type Qcow2Image } from './image.js';
import type { DirectWriters } from './direct-writers.js';
import { ClusterAllocation, type AllocationHooks } from './inflight.js';
import type { PlanTicket } from './plan-ticket.js';
import type { CachedTable } from './table-cache.js';
import { acquireCopiedL2Now, acquireL2ForWrite, linkRecord } from './l2-update.js';
import { joinInFlight, overwriteInPlace } from './write-direct.js';

/** What one request does in one cluster. Intra-cluster [a, b) is its data. */
type ClusterPlan =
  | { readonly kind: 'plain'; readonly guestCluster: number; readonly a: number; readonly b: number; readonly host: number; readonly writers: DirectWriters }
  | {
      readonly kind: 'record';
      readonly rec: ClusterAllocation;
      readonly a: number;
      readonly b: number;
      /** COW before the data: [cowFrom, a). */
      readonly cowFrom: number;
      /** The tail COW goes out with this write (else it stays deferred on the record). */
      readonly withTail: boolean;
      readonly src: CowSource;
    };

interface ChunkRequest {
  readonly l1Index: number;
  readonly offset: number;
  readonly data: Bytes;
  readonly sequential: boolean;
  /** Marked once this request has planned in its L2 table, so the next one there may. */
  readonly ticket: PlanTicket;
  /** The ticket of the request before it in the same table, while that one has not planned. */
  readonly after: PlanTicket | null;
}

/**
 * Writes `data` at guest `offset`; resolves once the data is on the host and
 * readable (reads overlay allocations not linked yet). Flush links them all.
 * `data` may be a range of another host file (a block job's copy): it then
 * goes to the host by copyFrom, COW and all else as for a buffer.
 */
export function writeGuest(img: Qcow2Image, offset: number, data: Bytes): Promise<void> {
  // A corrupt L1 or L2 entry met on any path rejects (never throws); no closures per request.
  try {
    return joinInFlight(img, offset, data) ?? overwriteInPlace(img, offset, data) ?? writePlanned(img, offset, data);
  } catch (e) {
    return Promise.reject(e);
  }
}

function writePlanned(img: Qcow2Image, offset: number, data: Bytes): Promise<void> {
  const span = img.clusterSize * img.l2Entries;
  const l1Index = Math.floor(offset / span);
  if (l1Index !== Math.floor((offset + data.length - 1) / span)) return writeAcrossTables(img, offset, data);
  // One L2 table (the common case): no fan-out, and no async frame of its own (one per request
  // was a large part of what a request allocated).
  const inflight = img.inflight;
  const intent = inflight.enterWrite(offset, data.length);
  const sequential = inflight.lastWriteEnd === offset;
  inflight.lastWriteEnd = offset + data.length;
  const turn = inflight.enterPlan(l1Index);
  const done = (): void => {
    turn.ticket.markPlanned();
    inflight.leaveWrite(intent);
  };
  return startChunk(img, { l1Index, offset, data, sequential, ticket: turn.ticket, after: turn.after }).then(done, (e: unknown) => {
    done();
    throw e;
  });
}

/** A write over more than one L2 table: a chunk per table, planned in each. */
async function writeAcrossTables(img: Qcow2Image, offset: number, data: Bytes): Promise<void> {
  const inflight = img.inflight;
  const intent = inflight.enterWrite(offset, data.length);
  const sequential = inflight.lastWriteEnd === offset;
  inflight.lastWriteEnd = offset + data.length;
  let results: PromiseSettledResult<void>[];
  const turns: PlanTicket[] = [];
  try {
    const jobs: Promise<void>[] = [];
    for (const c of l2Chunks(img, offset, data.length)) {
      const part = sliceBytes(data, c.offset - offset, c.offset - offset + c.length);
      const turn = inflight.enterPlan(c.l1Index);
      turns.push(turn.ticket);
      jobs.push(startChunk(img, { l1Index: c.l1Index, offset: c.offset, data: part, sequential, ...turn }));
    }
    results = await Promise.allSettled(jobs);
  } finally {
    for (const t of turns) t.markPlanned();
    inflight.leaveWrite(intent);
  }
  // The L2 updates follow on their own; their errors are reported by the next flush.
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/** writeChunk, its synchronous errors as a rejection. */
function startChunk(img: Qcow2Image, req: ChunkRequest): Promise<void> {
  try {
    return writeChunk(img, req);
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * Plans the chunk and writes it. When the table is cached and no request
 * before this one waits to plan in it, planning happens in this call and so
 * does the write in the common case (see executeChunk), with no async frame.
 * May throw synchronously (a corrupt entry met while planning).
 */
function writeChunk(img: Qcow2Image, req: ChunkRequest): Promise<void> {
  if (req.after !== null) return writeChunkWaiting(img, req);
  const table = acquireCopiedL2Now(img, req.l1Index);
  if (table === null) return writeChunkWaiting(img, req);
  const planned = planInTable(img, table, req);
  if (planned instanceof Promise) return planned.then(() => writeChunkWaiting(img, req));
  return executeChunk(img, planned, req);
}

/** writeChunk when it must wait: for the request before it, for the table, or for a record it conflicts with. */
async function writeChunkWaiting(img: Qcow2Image, req: ChunkRequest): Promise<void> {
  if (req.after !== null) await req.after.whenPlanned();
  for (;;) {
    const table = acquireCopiedL2Now(img, req.l1Index) ?? (await acquireL2ForWrite(img, req.l1Index));
    const planned = planInTable(img, table, req);
    if (planned instanceof Promise) {
      await planned;
      continue;
    }
    await executeChunk(img, planned, req);
    return;
  }
}

/** planChunk with the pinned `table`, which it releases; the next request may plan once it returns. */
function planInTable(img: Qcow2Image, table: CachedTable, req: ChunkRequest): ClusterPlan[] | Promise<void> {
  try {
    return planChunk(img, table, req);
  } finally {
    img.l2Cache.release(table);
    // The next request may plan now (even if this one waits for a record first).
    req.ticket.markPlanned();
  }
}

interface ClusterSpan {
  readonly cluster: number;
  readonly guestCluster: number;
  readonly a: number;
  readonly b: number;
}

/**
 * Plans the chunk with no await in between, so no other request changes the
 * table or the records meanwhile. Returns what to wait for on a conflict.
 */
function planChunk(img: Qcow2Image, table: CachedTable, req: ChunkRequest): ClusterPlan[] | Promise<void> {
  const inflight = img.inflight;
  const cs = img.clusterSize;
  const end = req.offset + req.data.length;
  // Pass 1: conflicts with records we cannot join. (Index loops, not the spans generator: this is the copy hot path.)
  for (let pos = req.offset; pos < end; pos = pos - (pos % cs) + cs) {
    const a = pos % cs;
    const rec = inflight.get((pos - a) / cs);
    if (!rec || rec.canJoin(a)) continue;
    inflight.stats.allocationWaits++;
    if (rec.tail !== 'done' || a >= rec.tailStart) inflight.stats.cowWaits++;
    rec.finalize();
    return rec.settled;
  }
  // Pass 2: join, record or write in place.
  const plans: ClusterPlan[] = [];
  const fresh: ClusterAllocation[] = [];
  const dataFile = img.geometry.externalDataFile;
  const hooks = hooksOf(img);
  for (let pos = req.offset; pos < end; ) {
    const guestCluster = pos - (pos % cs);
    const s: ClusterSpan = { cluster: guestCluster / cs, guestCluster, a: pos - guestCluster, b: Math.min(end, guestCluster + cs) - guestCluster };
    pos = guestCluster + s.b;
    const deferTail = inflight.keepsTail(s.guestCluster, s.b, cs, req.sequential);
    const joined = inflight.get(s.cluster);
    if (joined) {
      const src: CowSource = { old: joined.old, guestCluster: s.guestCluster, inPlace: joined.inPlace };
      const cowFrom = joined.join(s.b, deferTail);
      plans.push({ kind: 'record', rec: joined, a: s.a, b: s.b, cowFrom, withTail: !deferTail, src });
      continue;
    }
    const old = mappingAt(img, table, l2IndexOf(img, s.guestCluster));
    const oldHost = hostOf(old);
    const inPlace = oldHost !== null && copiedOf(old);
    const src: CowSource = { old, guestCluster: s.guestCluster, inPlace };
    if (oldHost !== null && isPlainOverwrite(img, src, s)) {
      plans.push({ kind: 'plain', guestCluster: s.guestCluster, a: s.a, b: s.b, host: oldHost, writers: inflight.enterDirect(s.cluster) });
      continue;
    }
    const rec = new ClusterAllocation(inflight, {
      cluster: s.cluster,
      l1Index: req.l1Index,
      old,
      inPlace,
      dataStart: s.a,
      tailStart: s.b,
      deferTail: deferTail && !inPlace,
      joinable: !inPlace,
      hooks,
    });
    rec.begin();
    inflight.add(rec);
    if (inPlace && oldHost !== null) rec.host = oldHost;
    else if (dataFile) rec.host = s.guestCluster;
    else fresh.push(rec);
    plans.push({ kind: 'record', rec, a: s.a, b: s.b, cowFrom: headStart(img, src, s.a), withTail: !(deferTail && !inPlace), src });
  }
  if (fresh.length > 0) {
    // One contiguous run for the chunk's new clusters, so their writes merge: placed
    // now when nothing has to wait (see allocRunNow), else once allocRun resolves, with
    // one promise for the whole run (not one per cluster: this is the copy hot path).
    const now = img.refcounts.allocRunNow(fresh.length);
    if (now !== null) placeRun(img, fresh, now);
    else {
      const ready = img.refcounts.allocRun(fresh.length).then((run) => placeRun(img, fresh, run));
      ready.catch(() => undefined);
      for (const rec of fresh) rec.hostReady = ready;
    }
  }
  return plans;
}

/** Gives the records of a chunk's new clusters their places in the run allocated for them. */
function placeRun(img: Qcow2Image, fresh: readonly ClusterAllocation[], run: { readonly offset: number; readonly fresh: boolean }): void {
  let host = run.offset;
  for (const rec of fresh) {
    rec.host = host;
    rec.cowIsNoop = run.fresh && cowReadsZero(img, rec.old);
    host += img.clusterSize;
  }
}

/** The hooks of an image's records: one pair of closures per image, not per planned chunk. */
const hooksByImage = new WeakMap<Qcow2Image, AllocationHooks>();

function hooksOf(img: Qcow2Image): AllocationHooks {
  let hooks = hooksByImage.get(img);
  if (hooks === undefined) {
    hooks = { writeTail: (rec) => writeTail(img, rec), link: (rec) => linkRecord(img, rec) };
    hooksByImage.set(img, hooks);
  }
  return hooks;
}

/** Builds the host writes of a planned chunk, issues them, and settles the plans. */
function executeChunk(img: Qcow2Image, plans: ClusterPlan[], req: ChunkRequest): Promise<void> {
  const [only] = plans;
  return (plans.length === 1 && only !== undefined ? writeOnePlanNow(img, only, req) : null) ?? executeChunkInGroups(img, plans, req);
}

/**
 * The common chunk of a guest's requests: one cluster and no COW to read (a
 * sequential stream's next request in a cluster whose tail it cancels, a
 * first write from the cluster's start, an overwrite). Its write is issued in
 * this call, or once the cluster's host offset is known; null for anything else.
 */
function writeOnePlanNow(img: Qcow2Image, p: ClusterPlan, req: ChunkRequest): Promise<void> | null {
  if (p.kind === 'plain') return writeOnePlan(img, p, p.host, req);
  const rec = p.rec;
  const needsCow = p.cowFrom < p.a || (p.withTail && tailEnd(img, p.src, p.b) > p.b);
  // Whether the COW is a no-op is known with the host offset.
  if (needsCow && (rec.host < 0 || !rec.cowIsNoop)) return null;
  if (rec.host >= 0) return writeOnePlan(img, p, rec.host, req);
  return rec.hostReady.then(
    () => writeOnePlan(img, p, rec.host, req),
    (e: unknown) => {
      settlePlan(p, e);
      throw e;
    },
  );
}

/** Writes the data of the chunk's one plan into its cluster at `host`, then settles the plan. */
function writeOnePlan(img: Qcow2Image, p: ClusterPlan, host: number, req: ChunkRequest): Promise<void> {
  const guestCluster = p.kind === 'plain' ? p.guestCluster : p.src.guestCluster;
  const from = guestCluster + p.a - req.offset;
  const to = guestCluster + p.b - req.offset;
  const data = from === 0 && to === req.data.length ? req.data : sliceBytes(req.data, from, to);
  let wrote: Promise<void>;
  try {
    wrote = writeGroup(img, { host: host + p.a, bufs: [data] });
  } catch (e) {
    wrote = Promise.reject(e);
  }
  return wrote.then(
    () => settlePlan(p, undefined),
    (e: unknown) => {
      settlePlan(p, e);
      throw e;
    },
  );
}

async function executeChunkInGroups(img: Qcow2Image, plans: ClusterPlan[], req: ChunkRequest): Promise<void> {
  const groups: { host: number; bufs: Bytes[]; plans: ClusterPlan[] }[] = [];
  try {
    let prevEnd = -1;
    for (const p of plans) {
      const bufs: Bytes[] = [];
      let host: number;
      let start: number;
      const guestCluster = p.kind === 'plain' ? p.guestCluster : p.src.guestCluster;
      const data = sliceBytes(req.data, guestCluster + p.a - req.offset, guestCluster + p.b - req.offset);
      if (p.kind === 'plain') {
        host = p.host;
        start = p.a;
        bufs.push(data);
      } else {
        if (p.rec.host < 0) await p.rec.hostReady;
        host = p.rec.host;
        const cow = !p.rec.cowIsNoop;
        start = cow ? p.cowFrom : p.a;
        if (cow && p.cowFrom < p.a) bufs.push(await readOld(img, p.src, { x: p.cowFrom, y: p.a }));
        bufs.push(data);
        if (cow && p.withTail) {
          const end = tailEnd(img, p.src, p.b);
          if (end > p.b) bufs.push(await readOld(img, p.src, { x: p.b, y: end }));
        }
      }
      const end = start + bufs.reduce((n, b) => n + b.length, 0);
      const last = groups[groups.length - 1];
      if (last && prevEnd === host + start) {
        last.bufs.push(...bufs);
        last.plans.push(p);
      } else {
        groups.push({ host: host + start, bufs, plans: [p] });
      }
      prevEnd = host + end;
    }
  } catch (e) {
    for (const p of plans) settlePlan(p, e);
    throw e;
  }
  const only = groups.length === 1 ? groups[0] : undefined;
  if (only) {
    const g = only;
    try {
      await writeGroup(img, g);
    } catch (e) {
      for (const p of g.plans) settlePlan(p, e);
      throw e;
    }
    for (const p of g.plans) settlePlan(p, undefined);
    return;
  }
  const results = await Promise.allSettled(
    groups.map(async (g) => {
      try {
        await writeGroup(img, g);
      } catch (e) {
        for (const p of g.plans) settlePlan(p, e);
        throw e;
      }
      for (const p of g.plans) settlePlan(p, undefined);
    }),
  );
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}

/** One host-contiguous run of a chunk: a write, a vectored write, or copies where host ranges take part. */
function writeGroup(img: Qcow2Image, g: { readonly host: number; readonly bufs: readonly Bytes[] }): Promise<void> {
  const [first] = g.bufs;
  if (g.bufs.length === 1 && first && !isHostRange(first)) return img.dataHost.write(first, g.host);
  return writeParts(img.dataHost, g.bufs, g.host);
}

function settlePlan(p: ClusterPlan, error: unknown): void {
  if (p.kind === 'plain') {
    p.writers.leave();
    return;
  }
  if (error !== undefined) p.rec.end(error);
  else p.rec.endData(p.a, p.b);
}

/** Writes a record's deferred tail COW (nobody joined to overwrite it). */
async function writeTail(img: Qcow2Image, rec: ClusterAllocation): Promise<void> {
  await rec.hostReady;
  if (rec.cowIsNoop) return;
  const src: CowSource = { old: rec.old, guestCluster: rec.cluster * img.clusterSize, inPlace: rec.inPlace };
  const end = tailEnd(img, src, rec.tailStart);
  if (end <= rec.tailStart) return;
  const bytes = await readOld(img, src, { x: rec.tailStart, y: end });
  await img.dataHost.write(bytes, rec.host + rec.tailStart);
}
