/**
 * Cluster allocations in flight (DESIGN.md "Allocation in flight").
 *
 * A write that allocates a cluster (or changes an allocated cluster's L2 entry,
 * e.g. subcluster bits) records it here, keyed by guest cluster index, until
 * its L2 entry is written ("linked"). A request touching a cluster with a
 * record either joins it (COW cancellation, below) or waits for that record
 * alone, then reads the mapping again. Nothing here is image-wide: requests on
 * other clusters never wait.
 *
 * COW cancellation (seed patch 001): the owner of a record may defer its tail
 * COW (the bytes after its data up to the end of the cluster) when another
 * write is expected right behind it. A write starting at or after the record's
 * `tailStart`, in the same cluster, while the tail is still deferred, joins:
 * it writes into the same host cluster, the tail shrinks to what lies after
 * it, and the link waits for its data. A deferred tail is written when no
 * write is in flight any more, when somebody needs the record settled (flush,
 * zero, discard, block status, a conflicting write), or when too many tails
 * are open.
 *
 * A participant's request completes when its data is on the host, before the
 * link; reads overlay the landed ranges of open records so they see it.
 * Errors after a participant completed are kept and reported by the next
 * flush (the cluster is then left unlinked: a leak, never a bad mapping).
 */
import { DirectWriters, IDLE_WRITERS_KEPT } from './direct-writers.js';
import type { L2Mapping } from './l2-entry.js';
import { SlotSet, type Slotted } from '../../util/slot-set.js';
import { PlanTicket } from './plan-ticket.js';

/** A write request's guest range [offset, end), from its entry until its data landed. */
export interface WriteIntent extends Slotted {
  readonly offset: number;
  readonly end: number;
  /** Left (leaveWrite ran); a second leave does nothing. */
  left: boolean;
}

/** Counters for tests and benchmarks. */
export interface InflightStats {
  /** Allocations recorded. */
  allocations: number;
  /** Writes that joined an in-flight allocation, shortening its tail COW. */
  cowCancellations: number;
  /** Writes that waited for an allocation whose pending tail COW they overlapped. */
  cowWaits: number;
  /** Writes (or zero/discard/status) that waited for an in-flight allocation for any reason. */
  allocationWaits: number;
  /** Deferred tail COWs finally written (not cancelled). */
  tailWrites: number;
}

/** One settled promise for every record that needs no wait. */
const RESOLVED: Promise<void> = Promise.resolve();

/** What a record needs from the write path, supplied when it is created. */
export interface AllocationHooks {
  /** Writes the tail COW [rec.tailStart, end of tail) of the record's host cluster. */
  writeTail(rec: ClusterAllocation): Promise<void>;
  /** Writes the L2 entry (and frees what it replaced); null when that was done at once. */
  link(rec: ClusterAllocation): Promise<void> | null;
}

export type TailState = 'deferred' | 'issued' | 'done';

const MAX_DEFERRED_TAILS = 64;

/** One cluster allocation (or L2 entry change) in flight. */
export class ClusterAllocation {
  readonly cluster: number;
  readonly l1Index: number;
  /** The mapping when the record was made. */
  readonly old: L2Mapping;
  /** The cluster keeps its host cluster (only its entry changes). */
  readonly inPlace: boolean;
  /** Host offset of the cluster; valid once `hostReady` resolved. */
  host = -1;
  hostReady: Promise<void> = RESOLVED;
  /**
   * The new host cluster already reads as zeros and so does the old cluster:
   * COW would only write zeros over zeros, and is skipped (as QEMU's
   * handle_alloc_space zeroes such a cluster instead of writing its COW).
   */
  cowIsNoop = false;
  /** Intra-cluster start of the first participant's data. */
  readonly dataStart: number;
  /** Intra-cluster end of the last participant's data: the tail COW starts here. */
  tailStart: number;
  tail: TailState;
  /** Joining is allowed (a fresh cluster written from its start or head COW). */
  readonly joinable: boolean;
  /** Writes to the host cluster not yet complete. */
  pending = 0;
  /**
   * Intra-cluster data ranges on the host, for reads before the link. A range
   * that touches the last one extends it, so a sequential stream's writes
   * share one entry.
   */
  readonly landed: Array<{ a: number; b: number }> = [];
  failure: unknown = null;
  /**
   * Links of the table's list of deferred tails (InflightTable's alone to
   * change): a list through the records, not a Set, which rebuilt its hash
   * table as records came and went, one per cluster of a sequential stream.
   */
  deferredPrev: ClusterAllocation | null = null;
  deferredNext: ClusterAllocation | null = null;
  inDeferredList = false;
  #linking = false;
  readonly #table: InflightTable;
  readonly #hooks: AllocationHooks;
  #settled: Promise<void> | null = null;
  #resolveSettled: (() => void) | null = null;
  #gone = false;

  constructor(table: InflightTable, init: {
    cluster: number;
    l1Index: number;
    old: L2Mapping;
    inPlace: boolean;
    dataStart: number;
    tailStart: number;
    deferTail: boolean;
    joinable: boolean;
    hooks: AllocationHooks;
  }) {
    this.#table = table;
    this.cluster = init.cluster;
    this.l1Index = init.l1Index;
    this.old = init.old;
    this.inPlace = init.inPlace;
    this.dataStart = init.dataStart;
    this.tailStart = init.tailStart;
    this.tail = init.deferTail ? 'deferred' : 'done';
    this.joinable = init.joinable;
    this.#hooks = init.hooks;
  }

  /**
   * Resolves once the record is gone (linked or failed); never rejects. Made
   * only when asked for: most records are never waited on, and a convert
   * makes one per cluster.
   */
  get settled(): Promise<void> {
    if (this.#gone) return RESOLVED;
    this.#settled ??= new Promise((resolve) => (this.#resolveSettled = resolve));
    return this.#settled;
  }

  /** A host write on this cluster starts (participant data, gap COW). */
  begin(): void {
    this.pending++;
  }

  /** A write starting at intra-cluster `a` may join (COW cancellation): it starts in the deferred tail. */
  canJoin(a: number): boolean {
    return this.joinable && this.tail === 'deferred' && this.failure === null && a >= this.tailStart;
  }

  /**
   * A write of intra-cluster data ending at `b` joins (its host write starts
   * now): the tail shrinks to what lies after it, and is closed unless
   * `keepTail`. Returns where the tail began, where the joiner's COW gap starts.
   */
  join(b: number, keepTail: boolean): number {
    this.pending++;
    const from = this.tailStart;
    this.tailStart = b;
    if (!keepTail) {
      this.tail = 'done';
      this.#table.tailClosed(this);
    }
    this.#table.stats.cowCancellations++;
    return from;
  }

  /** A host write that carried guest data [a, b) of the cluster finished. */
  endData(a: number, b: number): void {
    this.pending--;
    const last = this.landed[this.landed.length - 1];
    if (last !== undefined && last.b === a) last.b = b;
    else if (last !== undefined && last.a === b) last.a = a;
    else this.landed.push({ a, b });
    this.#progress();
  }

  /** A host write on this cluster failed (or a COW with no guest data finished: `error` undefined). */
  end(error?: unknown): void {
    this.pending--;
    if (error !== undefined) this.failure ??= error;
    this.#progress();
  }

  /** Writes the deferred tail now (nobody will join any more). */
  finalize(): void {
    if (this.tail !== 'deferred') return;
    this.tail = 'issued';
    this.#table.tailClosed(this);
    this.#table.stats.tailWrites++;
    this.pending++;
    this.#hooks.writeTail(this).then(
      () => {
        this.tail = 'done';
        this.end();
      },
      (e: unknown) => {
        this.tail = 'done';
        this.end(e);
      },
    );
  }

  #progress(): void {
    if (this.pending > 0 || this.tail === 'issued' || this.#linking) return;
    if (this.tail === 'deferred') {
      if (this.failure !== null) this.finalize();
      else if (this.#table.activeWrites === 0) this.#table.finalizeWhenIdle();
      return;
    }
    this.#linking = true;
    if (this.failure !== null) {
      this.#finish(this.failure);
      return;
    }
    let linking: Promise<void> | null;
    try {
      linking = this.#hooks.link(this);
    } catch (e) {
      this.#finish(e);
      return;
    }
    if (linking === null) this.#finish(null);
    else
      linking.then(
        () => this.#finish(null),
        (e: unknown) => this.#finish(e),
      );
  }

  #finish(error: unknown): void {
    // A failed record loses the data of the writes that completed into it (their L2 entry is
    // never written): the next flush reports that. When none completed, every writer already
    // had the error, and the flush has nothing more to say (a second report is a failure the
    // guest would pin on writes that succeeded).
    this.#table.remove(this, this.landed.length > 0 ? error : null);
    this.#gone = true;
    this.#resolveSettled?.();
  }
}

/** The records of one image. */
export class InflightTable {
  readonly stats: InflightStats = { allocations: 0, cowCancellations: 0, cowWaits: 0, allocationWaits: 0, tailWrites: 0 };
  /** Write requests between entry and the landing of their data. */
  activeWrites = 0;
  /** End of the last write planned: a write starting here continues a sequential stream. */
  lastWriteEnd = -1;
  readonly #records = new Map<number, ClusterAllocation>();
  /** Records whose tail is deferred, oldest first (linked through the records). */
  #deferredHead: ClusterAllocation | null = null;
  #deferredTail: ClusterAllocation | null = null;
  #deferredCount = 0;
  /** Plain in-place writers per guest cluster (no record; they must finish before the cluster is freed). */
  readonly #direct = new Map<number, DirectWriters>();
  /** Guest ranges of write requests that have entered but not landed: [offset, end). */
  readonly #intents = new SlotSet<WriteIntent>();
  #error: unknown = null;
  #zeros: Uint8Array | null = null;
  #idleCheck: ReturnType<typeof setImmediate> | null = null;
  /**
   * Per L2 table (L1 index): the ticket of the last request that entered. Kept
   * once planned (a Map emptied and refilled on every request rebuilt its table
   * each time), so at most one entry per L1 entry of the image.
   */
  readonly #lastTickets = new Map<number, PlanTicket>();

  /** A zero buffer for COW of zero ranges; callers only write it to the host. */
  zeroBuffer(length: number): Uint8Array {
    if (this.#zeros === null || this.#zeros.length < length) this.#zeros = new Uint8Array(length);
    return this.#zeros;
  }

  get(cluster: number): ClusterAllocation | undefined {
    return this.#records.get(cluster);
  }

  get size(): number {
    return this.#records.size;
  }

  /** Some cluster of [first, last] has an allocation in flight. */
  hasRecordIn(first: number, last: number): boolean {
    if (this.#records.size === 0) return false;
    for (let c = first; c <= last; c++) if (this.#records.has(c)) return true;
    return false;
  }

  add(rec: ClusterAllocation): void {
    this.#records.set(rec.cluster, rec);
    this.stats.allocations++;
    if (rec.tail === 'deferred') {
      this.#pushDeferred(rec);
      if (this.#deferredCount > MAX_DEFERRED_TAILS) this.#deferredHead?.finalize();
    }
  }

  tailClosed(rec: ClusterAllocation): void {
    this.#unlinkDeferred(rec);
  }

  #pushDeferred(rec: ClusterAllocation): void {
    if (rec.inDeferredList) return;
    rec.inDeferredList = true;
    rec.deferredPrev = this.#deferredTail;
    rec.deferredNext = null;
    if (this.#deferredTail !== null) this.#deferredTail.deferredNext = rec;
    else this.#deferredHead = rec;
    this.#deferredTail = rec;
    this.#deferredCount++;
  }

  #unlinkDeferred(rec: ClusterAllocation): void {
    if (!rec.inDeferredList) return;
    rec.inDeferredList = false;
    if (rec.deferredPrev !== null) rec.deferredPrev.deferredNext = rec.deferredNext;
    else this.#deferredHead = rec.deferredNext;
    if (rec.deferredNext !== null) rec.deferredNext.deferredPrev = rec.deferredPrev;
    else this.#deferredTail = rec.deferredPrev;
    rec.deferredPrev = null;
    rec.deferredNext = null;
    this.#deferredCount--;
  }

  remove(rec: ClusterAllocation, error: unknown): void {
    if (this.#records.get(rec.cluster) === rec) this.#records.delete(rec.cluster);
    this.#unlinkDeferred(rec);
    if (error !== null) this.#error ??= error;
  }

  /** The first failure that lost data of a write that had already completed; cleared by reading it. */
  takeError(): unknown {
    const e = this.#error;
    this.#error = null;
    return e;
  }

  /** A write request enters; leaveWrite(intent) once its data landed. (An object, not a closure: one per request.) */
  enterWrite(offset: number, length: number): WriteIntent {
    const intent: WriteIntent = { offset, end: offset + length, slot: -1, left: false };
    this.#intents.add(intent);
    this.activeWrites++;
    return intent;
  }

  leaveWrite(intent: WriteIntent): void {
    if (intent.left) return;
    intent.left = true;
    this.#intents.delete(intent);
    this.activeWrites--;
    if (this.activeWrites === 0) this.finalizeWhenIdle();
  }

  /**
   * Writes the deferred tails nobody is writing next to, if no write has
   * entered by the time the event loop comes round. Not at once: completions
   * arrive in batches (an io_uring reaps many at a time), so every request of a
   * sequential stream can finish before the first of the next ones enters; the
   * guest's next request, which would have cancelled the tail, then had to wait
   * for it.
   */
  finalizeWhenIdle(): void {
    if (this.#idleCheck !== null) return;
    this.#idleCheck = setImmediate(() => {
      this.#idleCheck = null;
      if (this.activeWrites !== 0) return;
      // A copy of the list first: finalizing unlinks.
      const deferred: ClusterAllocation[] = [];
      for (let r = this.#deferredHead; r !== null; r = r.deferredNext) deferred.push(r);
      for (const r of deferred) if (r.pending === 0) r.finalize();
    });
  }

  /**
   * A new request's ticket for the L2 table `l1Index`, and the ticket to wait
   * for first (null: plan at once). Per table, so a request stalled on one
   * table's I/O holds up no other table.
   */
  enterPlan(l1Index: number): { readonly ticket: PlanTicket; readonly after: PlanTicket | null } {
    const prev = this.#lastTickets.get(l1Index);
    const ticket = new PlanTicket();
    this.#lastTickets.set(l1Index, ticket);
    return { ticket, after: prev !== undefined && !prev.planned ? prev : null };
  }

  /** No request waits to plan in the L2 table `l1Index`. */
  planIdle(l1Index: number): boolean {
    return this.#lastTickets.get(l1Index)?.planned ?? true;
  }

  /**
   * A write ending at intra-cluster `b` of the cluster at `guestCluster` keeps
   * its tail for the next write: a sequential stream's next request usually
   * starts where it ends, or another write already entered starts there. If
   * none comes, the tail is written once the writes go idle.
   */
  keepsTail(guestCluster: number, b: number, clusterSize: number, sequential: boolean): boolean {
    return b < clusterSize && (sequential || this.expectsWriteIn(guestCluster + b, guestCluster + clusterSize));
  }

  /** Another write already entered starts in [from, to). */
  expectsWriteIn(from: number, to: number): boolean {
    for (let k = 0; k < this.#intents.size; k++) {
      const i = this.#intents.at(k);
      if (i.offset >= from && i.offset < to) return true;
    }
    return false;
  }

  /** Marks a plain in-place write on `cluster`; the result's `leave()` at its end. */
  enterDirect(cluster: number): DirectWriters {
    let d = this.#direct.get(cluster);
    if (d === undefined) {
      if (this.#direct.size >= IDLE_WRITERS_KEPT) this.#dropIdleWriters();
      d = new DirectWriters();
      this.#direct.set(cluster, d);
    }
    d.count++;
    return d;
  }

  #dropIdleWriters(): void {
    for (const [cluster, d] of this.#direct) if (d.count === 0) this.#direct.delete(cluster);
  }

  /**
   * Something to wait for before clusters [first, last] may change without a
   * record (zero, discard, status), or null when none is busy. Deferred tails
   * in the range are written now.
   */
  busy(first: number, last: number): Promise<void> | null {
    const waits: Promise<void>[] = [];
    const visit = (c: number): void => {
      const rec = this.#records.get(c);
      if (rec) {
        rec.finalize();
        waits.push(rec.settled);
      }
      const d = this.#direct.get(c);
      if (d !== undefined && d.count > 0) waits.push(d.whenIdle());
    };
    if (last - first < this.#records.size + this.#direct.size) {
      for (let c = first; c <= last; c++) visit(c);
    } else {
      const seen = new Set<number>();
      for (const c of [...this.#records.keys(), ...this.#direct.keys()]) {
        if (c >= first && c <= last && !seen.has(c)) {
          seen.add(c);
          visit(c);
        }
      }
    }
    if (waits.length === 0) return null;
    this.stats.allocationWaits++;
    return Promise.all(waits).then(() => undefined);
  }

  /** Waits until clusters [first, last] have no record and no plain writer. */
  async settle(first: number, last: number): Promise<void> {
    for (let w = this.busy(first, last); w !== null; w = this.busy(first, last)) await w;
  }

  /** Writes every deferred tail and waits for every record (flush). */
  async settleAll(): Promise<void> {
    while (this.#records.size > 0) {
      const recs = [...this.#records.values()];
      for (const r of recs) r.finalize();
      await Promise.all(recs.map((r) => r.settled));
    }
  }
}
