/**
 * The two ways a guest write reaches the host with no planning (write-path.ts
 * plans everything else): joining an allocation in flight (a sequential
 * stream's next request), and overwriting data in place. Each checks its
 * conditions synchronously and starts the write in the call, or returns null.
 */
import { isHostRange, type Bytes } from '../../host/host-range.js';
import { copiedOf, hostOf, isPlainOverwrite, tailEnd } from './cow.js';
import { mappingAt, type Qcow2Image } from './image.js';
import type { DirectWriters } from './direct-writers.js';
import { acquireCopiedL2Now } from './l2-update.js';

/**
 * A sequential stream's next request (15 of 16 in a 64 KiB cluster written
 * 4 KiB at a time): within one cluster whose allocation is in flight, starting
 * in its deferred tail, the host cluster known, and no COW to write with it.
 * It joins the record (COW cancellation) and goes to the host in this call,
 * with no ticket, plan or chunk: what planChunk and writeOnePlan would do for
 * it, less their objects (the JS thread's work per request bounds the depth-16
 * stream, see bench/RESULTS.md). Null when any of that does not hold, or a
 * request before it waits to plan in the table (it must join first).
 */
export function joinInFlight(img: Qcow2Image, offset: number, data: Bytes): Promise<void> | null {
  if (isHostRange(data) || data.length === 0) return null;
  const inflight = img.inflight;
  if (inflight.size === 0) return null;
  const cs = img.clusterSize;
  const cluster = Math.floor(offset / cs);
  const guestCluster = cluster * cs;
  const a = offset - guestCluster;
  const b = a + data.length;
  if (b > cs) return null;
  const rec = inflight.get(cluster);
  if (rec === undefined || !rec.canJoin(a) || !inflight.planIdle(rec.l1Index)) return null;
  const deferTail = inflight.keepsTail(guestCluster, b, cs, inflight.lastWriteEnd === offset);
  // A gap before the data, or a tail that goes out now: COW that only a zero cluster may skip
  // (known with the host offset).
  if ((rec.tailStart < a || (!deferTail && tailEnd(img, rec, b) > b)) && (rec.host < 0 || !rec.cowIsNoop)) return null;
  const intent = inflight.enterWrite(offset, data.length);
  inflight.lastWriteEnd = offset + data.length;
  rec.join(b, deferTail);
  // The stream's requests come faster than the first one's cluster is placed: then after it.
  const wrote = rec.host >= 0 ? writeAt(img, data, rec.host + a) : rec.hostReady.then(() => img.dataHost.write(data, rec.host + a));
  return wrote.then(
    () => {
      rec.endData(a, b);
      inflight.leaveWrite(intent);
    },
    (e: unknown) => {
      rec.end(e);
      inflight.leaveWrite(intent);
      throw e;
    },
  );
}

/**
 * A write within one L2 table onto clusters that are all plain data in place
 * already and follow each other on the host, with no allocation in flight on
 * any of them and no request waiting to plan in the table: it goes straight to
 * the host as one write, with no plan, ticket or record (the per-request path
 * of a VM or an NBD client overwriting its disk). Null when any of that does
 * not hold, or the table is not cached; the planned path then takes it.
 */
export function overwriteInPlace(img: Qcow2Image, offset: number, data: Bytes): Promise<void> | null {
  if (isHostRange(data) || data.length === 0) return null;
  // The span computed here, not by clustersInOneTable: no object for the allocating writes that
  // fail the next checks (a sequential stream's requests mostly land in a cluster in flight).
  const cs = img.clusterSize;
  const first = Math.floor(offset / cs);
  const last = Math.floor((offset + data.length - 1) / cs);
  const l1Index = Math.floor(first / img.l2Entries);
  const inflight = img.inflight;
  if (Math.floor(last / img.l2Entries) !== l1Index || inflight.hasRecordIn(first, last) || !inflight.planIdle(l1Index)) return null;
  const table = acquireCopiedL2Now(img, l1Index);
  if (table === null) return null;
  let host0 = -1;
  try {
    for (let c = first; c <= last; c++) {
      const old = mappingAt(img, table, c % img.l2Entries);
      const host = hostOf(old);
      const guestCluster = c * cs;
      const a = Math.max(offset, guestCluster) - guestCluster;
      const b = Math.min(offset + data.length, guestCluster + cs) - guestCluster;
      if (host === null || !isPlainOverwrite(img, { old, guestCluster, inPlace: copiedOf(old) }, { a, b })) return null;
      if (c === first) host0 = host;
      else if (host !== host0 + (c - first) * cs) return null;
    }
  } finally {
    img.l2Cache.release(table);
  }
  const start = host0 + (offset - first * cs);
  const intent = inflight.enterWrite(offset, data.length);
  inflight.lastWriteEnd = offset + data.length;
  // One cluster (the common request) makes no array.
  const writers = inflight.enterDirect(first);
  let more: DirectWriters[] | null = null;
  for (let c = first + 1; c <= last; c++) (more ??= []).push(inflight.enterDirect(c));
  const done = (): void => {
    writers.leave();
    if (more !== null) for (const w of more) w.leave();
    inflight.leaveWrite(intent);
  };
  return img.dataHost.write(data, start).then(done, (e: unknown) => {
    done();
    throw e;
  });
}

/** The data host's write of `data` at `host`, a synchronous throw as a rejection. */
function writeAt(img: Qcow2Image, data: Uint8Array, host: number): Promise<void> {
  try {
    return img.dataHost.write(data, host);
  } catch (e) {
    return Promise.reject(e);
  }
}
