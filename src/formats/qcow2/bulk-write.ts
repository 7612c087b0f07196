/**
 * Bulk copy into a qcow2 image that reads as zeros where the copy lands (a
 * fresh convert target): convert's data without the JS thread touching it.
 *
 * The runs are gathered, whole clusters at a time, into 8 MiB buffers. The
 * addon reads a buffer's runs on a pool thread and maps which blocks of
 * `zeroBlock` bytes hold data; a cluster is allocated when one of its blocks
 * does, as the copy loop's writes allocate the clusters their data runs
 * touch (aligned zero blocks are left out). The clusters with data get host
 * runs as the copy loop's writes would allocate them, the addon writes them
 * on a pool thread, and their L2 entries are set once the data is on the host. While buffers are written
 * the next is read, so the two page-cache copies of a convert overlap, as
 * qemu-img's reads and writes do on its worker threads.
 *
 * Allocation order is the write path's: a new L2 table, then the data
 * clusters after it. Dependency order too: refcounts before L2 entries, and a
 * sync of the data before the entries reach the disk.
 */
import { VdiskError } from '../../errors.js';
import { HostCopyError, type BufferSlice, type HostCopyRun } from '../../host/host-file.js';
import { hugePageBytes } from '../../host/huge-pages.js';
import type { GuestCopyRun } from '../driver.js';
import { l2OffsetAt, mappingAt, type Qcow2Image } from './image.js';
import { setCopiedL2Entry } from './l2-entry.js';
import type { CachedTable } from './table-cache.js';
import { acquireCopiedL2Now, acquireL2ForWrite } from './l2-update.js';

/** Bytes of one buffer: a multiple of every cluster size (512 B to 2 MiB). */
const PART = 8 * 1024 * 1024;
/**
 * Four buffers: reads go ahead of the writes, one after another, and two
 * writes are in flight. The kernel takes one buffered write to a file at a
 * time (the inode lock), so the second waits in the kernel and starts the
 * moment the first ends; with one write at a time the file sat idle for a
 * wake-up of the JS thread after each (0.25 ms on average, 60 ms of a 4 GiB
 * convert). Two reads at once measured slower on 2 cores (0.89-1.64 s against
 * 0.78-1.22 s for a 4 GiB convert), and 2 or 32 MiB parts no better than 8.
 */
const BUFFERS = 4;
const WRITES_IN_FLIGHT = 2;
/** The copy loop's request size (qemu-img's too). */
const COPY_CHUNK = 2 * 1024 * 1024;

/** Whole clusters of the disk from `guest`, held in a part's buffer from `at`. */
interface Window {
  readonly guest: number;
  readonly at: number;
  length: number;
}

/** What one buffer takes: its windows and the runs read into them. */
interface Part {
  readonly windows: Window[];
  readonly runs: HostCopyRun[];
  used: number;
}

/**
 * The clusters of a part that hold data: for each, where it is in the buffer,
 * which guest cluster, and its new host offset. Typed arrays, not an object per
 * cluster: host offsets pass 2^30, and a field that changes from small integer
 * to double made V8 throw away and recompile the functions that read it.
 */
interface Placement {
  count: number;
  readonly from: Float64Array;
  readonly cluster: Float64Array;
  readonly host: Float64Array;
}

const spareBuffers: Uint8Array[] = [];

function takeBuffer(): Uint8Array {
  return spareBuffers.pop() ?? hugePageBytes(PART);
}

/** Buffers are kept for the next call: fresh ones cost their page faults each time. */
function giveBuffer(buf: Uint8Array): void {
  if (spareBuffers.length < BUFFERS) spareBuffers.push(buf);
}

/**
 * The bulk write (BlockDriver.writeRunsFromHost for qcow2). Null, having
 * written nothing, when this image cannot take it so: extended L2 entries
 * (subcluster allocation follows each write), a backing file or an external
 * data file, a host without the addon's halves, a zero block that does not
 * divide the cluster, or a cluster of the copy already allocated or in flight.
 */
export async function writeRunsInBulk(img: Qcow2Image, runs: readonly GuestCopyRun[], zeroBlock: number): Promise<number | null> {
  const host = img.host;
  const cs = img.clusterSize;
  if (!host.readRunsInto || !host.writeSlices || img.dataHost !== host || img.geometry.extendedL2 || img.backing !== null) return null;
  if (zeroBlock <= 0 || cs % zeroBlock !== 0 || runs.length === 0) return null;
  const parts = partsOf(runs, cs);
  if (!(await readsZeroThroughout(img, parts))) return null;

  const buffers = Array.from({ length: BUFFERS }, takeBuffer);
  const maps = Array.from({ length: BUFFERS }, () => new Uint8Array(PART / zeroBlock));
  let stopped = false;
  // reads[k] starts once read k-1 has ended and its buffer's last write (part k - BUFFERS) is
  // done: the reads go ahead one after another, without waiting for the loop below.
  const reads: Array<Promise<boolean>> = [];
  const writes: Array<Promise<void>> = [];
  const queueRead = (k: number): void => {
    if (k >= parts.length) return;
    const part = parts[k] as Part;
    const previous = reads[k - 1] ?? Promise.resolve(true);
    const freed = writes[k - BUFFERS] ?? Promise.resolve();
    const p = Promise.all([previous, freed]).then(() =>
      stopped ? false : readPart(img, part, buffers[k % BUFFERS] as Uint8Array, { used: part.used, zeroBlock, dataMap: maps[k % BUFFERS] as Uint8Array }),
    );
    // Settled in the loop or by the finally below; never unhandled meanwhile.
    p.catch(() => undefined);
    reads[k] = p;
  };
  for (let k = 0; k < BUFFERS; k++) queueRead(k);
  // The L2 links, in part order, each after its part's data write.
  let linked: Promise<void> = Promise.resolve();
  let written = 0;
  try {
    for (let k = 0; k < parts.length; k++) {
      const part = parts[k] as Part;
      const ok = await reads[k];
      if (!ok) {
        if (k === 0) return null;
        throw new VdiskError('EIO', `'${img.file}': the host stopped taking the bulk copy at guest offset ${part.windows[0]?.guest ?? 0}`, { file: img.file });
      }
      const placed = await placePart(img, part, maps[k % BUFFERS] as Uint8Array, zeroBlock);
      if (k >= WRITES_IN_FLIGHT) await writes[k - WRITES_IN_FLIGHT];
      const wrote = writePart(img, part, buffers[k % BUFFERS] as Uint8Array, placed);
      wrote.catch(() => undefined);
      writes[k] = wrote;
      queueRead(k + BUFFERS);
      linked = Promise.all([linked, wrote]).then(() => linkPlaced(img, placed));
      linked.catch(() => undefined);
      written += placed.count * cs;
    }
    // Each write's link waits for it: the last link settles after every write.
    await linked;
  } finally {
    // The addon's threads use the buffers: never hand them on while it runs.
    stopped = true;
    await Promise.allSettled([...reads, ...writes, linked]);
    for (const b of buffers) giveBuffer(b);
  }
  return written;
}

/** Gathers the runs (in disk order) into parts of whole clusters; a cluster never spans two parts. */
function partsOf(runs: readonly GuestCopyRun[], cs: number): Part[] {
  const sorted = [...runs].sort((a, b) => a.offset - b.offset);
  const parts: Part[] = [];
  let part: Part = { windows: [], runs: [], used: 0 };
  let win: Window | null = null;
  for (const r of sorted) {
    let off = r.offset;
    let pos = r.src.offset;
    let left = r.src.length;
    while (left > 0) {
      const clusterStart = off - (off % cs);
      // Runs ascend without overlap: `off` is in the window's last cluster, just past it, or further on.
      if (win === null || clusterStart > win.guest + win.length) {
        if (part.used + cs > PART) {
          parts.push(part);
          part = { windows: [], runs: [], used: 0 };
        }
        win = { guest: clusterStart, at: part.used, length: 0 };
        part.windows.push(win);
      }
      const room = win.guest + (PART - win.at) - off;
      if (room <= 0) {
        // The part is full at a cluster boundary: the run goes on in a new part.
        parts.push(part);
        part = { windows: [], runs: [], used: 0 };
        win = null;
        continue;
      }
      const take = Math.min(left, room);
      part.runs.push({ src: { file: r.src.file, offset: pos, length: take }, at: win.at + (off - win.guest) });
      win.length = Math.max(win.length, Math.ceil((off + take) / cs) * cs - win.guest);
      part.used = win.at + win.length;
      off += take;
      pos += take;
      left -= take;
    }
  }
  if (part.runs.length > 0) parts.push(part);
  return parts;
}

/** Every cluster the parts cover is unallocated (or reads as zeros unallocated) and has no allocation in flight. */
async function readsZeroThroughout(img: Qcow2Image, parts: readonly Part[]): Promise<boolean> {
  const cs = img.clusterSize;
  for (const part of parts) {
    for (const w of part.windows) {
      const first = w.guest / cs;
      const last = (w.guest + w.length) / cs - 1;
      if (img.inflight.hasRecordIn(first, last)) return false;
      for (let c = first; c <= last; ) {
        const l1Index = Math.floor(c / img.l2Entries);
        const tableEnd = Math.min(last, (l1Index + 1) * img.l2Entries - 1);
        const { l2Offset } = l2OffsetAt(img, l1Index);
        if (l2Offset !== 0) {
          const table = await img.l2Cache.acquire(l2Offset);
          try {
            if (!entriesReadZero(img, table, c, tableEnd)) return false;
          } finally {
            img.l2Cache.release(table);
          }
        }
        c = tableEnd + 1;
      }
    }
  }
  return true;
}

/** Guest clusters first..last of `table` are unallocated or zero without allocation. */
function entriesReadZero(img: Qcow2Image, table: CachedTable, first: number, last: number): boolean {
  for (let c = first; c <= last; c++) {
    const kind = mappingAt(img, table, c % img.l2Entries).kind;
    if (kind !== 'unallocated' && kind !== 'zero-plain') return false;
  }
  return true;
}

async function readPart(img: Qcow2Image, part: Part, buf: Uint8Array, layout: { used: number; zeroBlock: number; dataMap: Uint8Array }): Promise<boolean> {
  try {
    return (await img.host.readRunsInto?.(buf, part.runs, layout)) ?? false;
  } catch (e) {
    // The addon names a buffer offset: the caller wants the guest's.
    if (e instanceof HostCopyError) throw new HostCopyError(e, 'read', guestOf(part, e.at));
    throw e;
  }
}

function guestOf(part: Part, at: number): number {
  const w = part.windows.find((x) => at >= x.at && at < x.at + x.length);
  return w ? w.guest + (at - w.at) : at;
}

/** The clusters of the part that hold data, each given a host cluster (after its L2 table, when that is new). */
async function placePart(img: Qcow2Image, part: Part, dataMap: Uint8Array, zeroBlock: number): Promise<Placement> {
  const cs = img.clusterSize;
  const pl = dataClusters(part, dataMap, zeroBlock, cs);
  // One host run per stretch of adjacent clusters within a table and a copy chunk, as the copy
  // loop's writes allocate (so refcount blocks land where they do with qemu-img).
  for (let i = 0; i < pl.count; ) {
    const j = stretchEnd(pl, i, img.l2Entries, Math.max(1, COPY_CHUNK / cs));
    const l1Index = Math.floor((pl.cluster[i] as number) / img.l2Entries);
    const table = acquireCopiedL2Now(img, l1Index) ?? (await acquireL2ForWrite(img, l1Index));
    img.l2Cache.release(table);
    const run = await img.refcounts.allocRun(j - i);
    for (let k = i; k < j; k++) pl.host[k] = run.offset + (k - i) * cs;
    i = j;
  }
  return pl;
}

/** The clusters of the part's windows with a data block, in buffer order. */
function dataClusters(part: Part, dataMap: Uint8Array, zeroBlock: number, cs: number): Placement {
  const max = part.used / cs;
  const pl: Placement = { count: 0, from: new Float64Array(max), cluster: new Float64Array(max), host: new Float64Array(max) };
  const perCluster = cs / zeroBlock;
  for (const w of part.windows) {
    const firstCluster = w.guest / cs;
    for (let from = w.at; from < w.at + w.length; from += cs) {
      const b = from / zeroBlock;
      let data = false;
      for (let i = 0; i < perCluster && !data; i++) data = dataMap[b + i] === 1;
      if (!data) continue;
      pl.from[pl.count] = from;
      pl.cluster[pl.count] = firstCluster + (from - w.at) / cs;
      pl.count++;
    }
  }
  return pl;
}

/** Where the stretch from entry i ends: adjacent guest clusters in one L2 table and one copy chunk. */
function stretchEnd(pl: Placement, i: number, l2Entries: number, chunkClusters: number): number {
  const first = pl.cluster[i] as number;
  let j = i + 1;
  while (j < pl.count) {
    const c = pl.cluster[j] as number;
    if (c !== first + (j - i) || Math.floor(c / l2Entries) !== Math.floor(first / l2Entries) || Math.floor(c / chunkClusters) !== Math.floor(first / chunkClusters)) break;
    j++;
  }
  return j;
}

/** The writes of a placement: clusters that follow each other in the buffer and on the host as one slice. */
function slicesOf(pl: Placement, cs: number): BufferSlice[] {
  const slices: BufferSlice[] = [];
  for (let i = 0; i < pl.count; ) {
    const from = pl.from[i] as number;
    const at = pl.host[i] as number;
    let j = i + 1;
    while (j < pl.count && pl.from[j] === from + (j - i) * cs && pl.host[j] === at + (j - i) * cs) j++;
    slices.push({ from, length: (j - i) * cs, at });
    i = j;
  }
  return slices;
}

/** Writes the part's data clusters (linkPlaced links them once they are on the host). */
async function writePart(img: Qcow2Image, part: Part, buf: Uint8Array, pl: Placement): Promise<void> {
  const slices = slicesOf(pl, img.clusterSize);
  try {
    if (!(await img.host.writeSlices?.(buf, slices))) throw new VdiskError('EIO', `'${img.file}': the host stopped taking the bulk copy`, { file: img.file });
  } catch (e) {
    if (e instanceof HostCopyError) {
      const s = slices.find((x) => e.at >= x.at && e.at < x.at + x.length);
      throw new HostCopyError(e, 'write', s ? guestOf(part, s.from + (e.at - s.at)) : e.at);
    }
    throw e;
  }
}

/** Sets the L2 entries of clusters whose data is on the host (in the cache; refcounts and a data sync go first). */
async function linkPlaced(img: Qcow2Image, pl: Placement): Promise<void> {
  if (pl.count === 0) return;
  if (!img.l2Cache.dependsOnSettled(img.refcounts.cache)) await img.l2Cache.setDependency(img.refcounts.cache);
  img.l2Cache.requireSyncBeforeWrite();
  for (let i = 0; i < pl.count; ) {
    const l1Index = Math.floor((pl.cluster[i] as number) / img.l2Entries);
    const table = acquireCopiedL2Now(img, l1Index) ?? (await acquireL2ForWrite(img, l1Index));
    try {
      i = writeEntries(img, table, pl, i);
      img.l2Cache.markDirty(table);
    } finally {
      img.l2Cache.release(table);
    }
  }
}

/**
 * Writes the L2 entries of the placement's clusters in `table` from entry i
 * on; returns where the next table's begin. The entries were unallocated (or
 * zero without allocation), and without extended L2 a new cluster's entry is
 * the same whatever it was: COPIED, at its host offset.
 */
function writeEntries(img: Qcow2Image, table: CachedTable, pl: Placement, i: number): number {
  const l1Index = Math.floor((pl.cluster[i] as number) / img.l2Entries);
  const view = new DataView(table.data.buffer, table.data.byteOffset, table.data.byteLength);
  let k = i;
  for (; k < pl.count; k++) {
    const c = pl.cluster[k] as number;
    if (Math.floor(c / img.l2Entries) !== l1Index) break;
    setCopiedL2Entry(view, c % img.l2Entries, pl.host[k] as number);
  }
  return k;
}
