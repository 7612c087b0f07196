/**
 * Reads and block status: one L2 table at a time, subcluster-precise. Host
 * reads of adjacent guest ranges that are adjacent on the host are merged.
 */
import { bufferView, skipZeroUnits } from '../../util/zeros.js';
import type { HostExtent, LayerExtent } from '../driver.js';
import { plainDataOffset, subclusterState, type L2Mapping } from './l2-entry.js';
import { plainRunEnd } from './l2-entry-runs.js';
import type { CachedTable } from './table-cache.js';
import { acquireL2, clustersInOneTable, l2Chunks, l2IndexOf, l2OffsetAt, mappingAt, readBacking, readCompressed, type Qcow2Image } from './image.js';
import type { Mutable } from '../../util/mutable.js';
import { beWord } from '../../util/be-word.js';

/** A piece of a guest range with one way of reading it. */
export type Piece =
  | { readonly kind: 'data'; readonly guest: number; readonly length: number; readonly host: number }
  | { readonly kind: 'zero'; readonly guest: number; readonly length: number; readonly host: number | null }
  /** `host`: a host cluster exists but this subcluster is unallocated (QEMU reports its offset). */
  | { readonly kind: 'unallocated'; readonly guest: number; readonly length: number; readonly host?: number }
  | { readonly kind: 'compressed'; readonly guest: number; readonly length: number; readonly mapping: Extract<L2Mapping, { kind: 'compressed' }> };

/** Guest bytes written by a completed write whose cluster is not linked yet: read them at `host`. */
interface Overlay {
  readonly guest: number;
  readonly length: number;
  readonly host: number;
}

/**
 * The landed data of in-flight allocations over [offset, offset+length). Taken
 * in the same synchronous step as the L2 lookup, so a link in between cannot
 * hide data from both.
 */
function overlaysOf(img: Qcow2Image, offset: number, length: number, out: Overlay[]): void {
  if (img.inflight.size === 0) return;
  const end = offset + length;
  for (let c = Math.floor(offset / img.clusterSize); c * img.clusterSize < end; c++) {
    const rec = img.inflight.get(c);
    if (!rec) continue;
    const base = c * img.clusterSize;
    for (const r of rec.landed) {
      const from = Math.max(offset, base + r.a);
      const to = Math.min(end, base + r.b);
      if (from < to) out.push({ guest: from, length: to - from, host: rec.host + (from - base) });
    }
  }
}

/**
 * The pieces of [offset, offset+length), all within one L2 table's range,
 * merged where consecutive pieces continue each other. With `overlays`, also
 * collects the landed data of allocations in flight over the range.
 */
export async function mapChunk(img: Qcow2Image, chunk: { l1Index: number; offset: number; length: number }, overlays?: Overlay[]): Promise<Piece[]> {
  // Every piece pushed is a fresh object of this call, so a merge may grow the
  // last one in place (a copy per cluster was a hot spot of reading a whole disk).
  const pieces: Mutable<Piece>[] = [];
  const push = (p: Piece): void => {
    const last = pieces[pieces.length - 1];
    if (last && last.kind === p.kind && last.guest + last.length === p.guest) {
      if (p.kind === 'data' && last.kind === 'data' && last.host + last.length === p.host) {
        last.length += p.length;
        return;
      }
      if (p.kind === 'zero' && last.kind === 'zero') {
        const contiguous = last.host !== null && p.host !== null && last.host + last.length === p.host;
        if (contiguous || (last.host === null && p.host === null)) {
          last.length += p.length;
          return;
        }
      }
      if (p.kind === 'unallocated' && last.kind === 'unallocated') {
        const contiguous = last.host !== undefined && p.host !== undefined && last.host + last.length === p.host;
        if (contiguous || (last.host === undefined && p.host === undefined)) {
          last.length += p.length;
          return;
        }
      }
    }
    pieces.push(p);
  };
  const table = await acquireL2(img, chunk.l1Index);
  if (overlays) overlaysOf(img, chunk.offset, chunk.length, overlays);
  if (table === null) return [{ kind: 'unallocated', guest: chunk.offset, length: chunk.length }];
  try {
    const end = chunk.offset + chunk.length;
    const sc = img.clusterSize / img.subclusters;
    const words = new Uint32Array(table.data.buffer, table.data.byteOffset, table.data.byteLength / 4);
    const wordsPerEntry = img.geometry.extendedL2 ? 4 : 2;
    // Standard entries of plain data clusters are decoded here, a run of them at a time; the rest through mappingAt.
    const standard = !img.geometry.extendedL2;
    const lastIndex = l2IndexOf(img, end - 1);
    let bytes: Buffer | undefined;
    let pos = chunk.offset;
    while (pos < end) {
      const clusterStart = pos - (pos % img.clusterSize);
      const index = l2IndexOf(img, pos);
      // Runs of all-zero entries (unallocated) are skipped without decoding: sparse
      // tables (a 1 TiB image with a few thousand clusters) are mostly that.
      if (isZeroEntry(words, index, wordsPerEntry)) {
        const entryBytes = wordsPerEntry * 4;
        bytes ??= bufferView(table.data);
        const j = skipZeroUnits(bytes, (index + 1) * entryBytes, (lastIndex + 1) * entryBytes, entryBytes) / entryBytes;
        const runEnd = Math.min(end, clusterStart + (j - index) * img.clusterSize);
        push({ kind: 'unallocated', guest: pos, length: runEnd - pos });
        pos = runEnd;
        continue;
      }
      const clusterEnd = Math.min(end, clusterStart + img.clusterSize);
      const host = standard ? plainDataOffset(beWord(table.data, index * 8), beWord(table.data, index * 8 + 4), img.geometry.clusterBits) : -1;
      if (host >= 0) {
        // The clusters after it that continue it on the host make one piece with it.
        const runEnd = Math.min(end, clusterStart + (plainRunEnd(table.data, index, lastIndex + 1, img.geometry.clusterBits) - index) * img.clusterSize);
        push({ kind: 'data', guest: pos, length: runEnd - pos, host: host + (pos - clusterStart) });
        pos = runEnd;
        continue;
      }
      const m = mappingAt(img, table, index);
      if (m.kind !== 'subclusters') {
        pushUniform(m, pos, clusterEnd - pos, clusterStart, push);
        pos = clusterEnd;
        continue;
      }
      while (pos < clusterEnd) {
        const i = Math.floor((pos - clusterStart) / sc);
        const scEnd = Math.min(clusterEnd, clusterStart + (i + 1) * sc);
        const state = subclusterState(m, i);
        const len = scEnd - pos;
        const host = m.hostOffset === null ? null : m.hostOffset + (pos - clusterStart);
        if (state === 'data' && host !== null) push({ kind: 'data', guest: pos, length: len, host });
        else if (state === 'zero') push({ kind: 'zero', guest: pos, length: len, host });
        else push(host === null ? { kind: 'unallocated', guest: pos, length: len } : { kind: 'unallocated', guest: pos, length: len, host });
        pos = scEnd;
      }
    }
  } finally {
    img.l2Cache.release(table);
  }
  return pieces;
}

function isZeroEntry(words: Uint32Array, index: number, wordsPerEntry: number): boolean {
  const w = index * wordsPerEntry;
  if (words[w] !== 0 || words[w + 1] !== 0) return false;
  return wordsPerEntry === 2 || (words[w + 2] === 0 && words[w + 3] === 0);
}

function pushUniform(m: L2Mapping, pos: number, len: number, clusterStart: number, push: (p: Piece) => void): void {
  switch (m.kind) {
    case 'unallocated':
      push({ kind: 'unallocated', guest: pos, length: len });
      return;
    case 'zero-plain':
      push({ kind: 'zero', guest: pos, length: len, host: null });
      return;
    case 'zero-alloc':
      push({ kind: 'zero', guest: pos, length: len, host: m.hostOffset + (pos - clusterStart) });
      return;
    case 'normal':
      push({ kind: 'data', guest: pos, length: len, host: m.hostOffset + (pos - clusterStart) });
      return;
    case 'compressed':
      push({ kind: 'compressed', guest: pos, length: len, mapping: m });
      return;
    case 'subclusters':
      return;
  }
}

/** Reads guest bytes [offset, offset+buf.length) into `buf`. */
export function readGuest(img: Qcow2Image, offset: number, buf: Uint8Array): Promise<void> {
  // A corrupt L1 entry met by the direct path rejects, as in the mapped path (no closures per request).
  try {
    return readPlainNow(img, offset, buf) ?? readMapped(img, offset, buf);
  } catch (e) {
    return Promise.reject(e);
  }
}

/**
 * A read of plain data clusters (standard L2 entries) that follow each other
 * on the host, within one cached L2 table, with no allocation in flight on any
 * of them: one host read, issued in this call. Null for anything else; the
 * mapped path takes it.
 */
function readPlainNow(img: Qcow2Image, offset: number, buf: Uint8Array): Promise<void> | null {
  const host = plainHostOffsetNow(img, offset, buf.length);
  return host < 0 ? null : img.dataHost.read(buf, host);
}

/**
 * Where guest bytes [offset, offset+length) are on the data file, when they are
 * plain data clusters (standard L2 entries) that follow each other on the host
 * within one cached L2 table, with no allocation in flight on any of them; -1
 * for anything else. Looks only at what is cached: no I/O, no wait.
 */
export function plainHostOffsetNow(img: Qcow2Image, offset: number, length: number): number {
  if (img.geometry.extendedL2 || length === 0) return -1;
  const span = clustersInOneTable(img, offset, length);
  if (span === null || img.inflight.hasRecordIn(span.first, span.last)) return -1;
  const { first, last } = span;
  const cs = img.clusterSize;
  const { l2Offset } = l2OffsetAt(img, span.l1Index);
  if (l2Offset === 0) return -1;
  const table = img.l2Cache.acquireCached(l2Offset);
  if (table === null) return -1;
  try {
    const index = first % img.l2Entries;
    const bits = img.geometry.clusterBits;
    const host = plainDataOffset(beWord(table.data, index * 8), beWord(table.data, index * 8 + 4), bits);
    if (host < 0 || plainRunEnd(table.data, index, index + last - first + 1, bits) !== index + last - first + 1) return -1;
    return host + (offset - first * cs);
  } finally {
    img.l2Cache.release(table);
  }
}

async function readMapped(img: Qcow2Image, offset: number, buf: Uint8Array): Promise<void> {
  const jobs: Promise<void>[] = [];
  const overlays: Overlay[] = [];
  for (const chunk of l2Chunks(img, offset, buf.length)) {
    for (const p of await mapChunk(img, chunk, overlays)) {
      const dst = buf.subarray(p.guest - offset, p.guest - offset + p.length);
      switch (p.kind) {
        case 'data':
          jobs.push(img.dataHost.read(dst, p.host));
          break;
        case 'zero':
          dst.fill(0);
          break;
        case 'unallocated':
          jobs.push(readBacking(img, p.guest, dst));
          break;
        case 'compressed':
          jobs.push(
            readCompressed(img, p.mapping).then((cluster) => {
              const intra = p.guest % img.clusterSize;
              dst.set(cluster.subarray(intra, intra + p.length));
            }),
          );
          break;
      }
    }
  }
  await Promise.all(jobs);
  // Data of completed writes not linked yet wins over what the L2 table said.
  if (overlays.length > 0) await Promise.all(overlays.map((o) => img.dataHost.read(buf.subarray(o.guest - offset, o.guest - offset + o.length), o.host)));
}

/**
 * Where this layer keeps the start of [offset, offset+length), within one L2
 * table: a host-contiguous run of plain data clusters (never compressed), the
 * run of unallocated clusters that read from the backing, or neither. A range
 * with an allocation in flight is `other`: its bytes are not where the table says.
 */
export async function hostExtentOf(img: Qcow2Image, offset: number, length: number): Promise<HostExtent> {
  const span = img.clusterSize * img.l2Entries;
  const l1Index = Math.floor(offset / span);
  const overlays: Overlay[] = [];
  const [first] = await mapChunk(img, { l1Index, offset, length: Math.min(length, (l1Index + 1) * span - offset) }, overlays);
  if (!first || overlays.length > 0) return { kind: 'other' };
  if (first.kind === 'data') return { kind: 'host', range: { file: img.dataHost, offset: first.host, length: first.length } };
  if (first.kind === 'unallocated') return { kind: 'backing', length: first.length };
  return { kind: 'other' };
}

/** L2 tables loaded ahead of the one being mapped by block status. */
const STATUS_READ_AHEAD = 8;

/** This layer's allocation over [offset, offset+length). */
export async function layerStatus(img: Qcow2Image, offset: number, length: number): Promise<LayerExtent[]> {
  // Extents are made here and grown in place by merges: a 1 TiB map makes tens of thousands.
  const out: Mutable<LayerExtent>[] = [];
  const hostFile = img.dataHost === img.host ? undefined : img.dataHost.path;
  const push = (length: number, allocated: boolean, zero: boolean, data: boolean, host: number | null | undefined, compressed: boolean): void => {
    const last = out[out.length - 1];
    if (
      last !== undefined &&
      last.allocated === allocated &&
      last.zero === zero &&
      last.data === data &&
      (last.compressed ?? false) === compressed &&
      (last.hostOffset === undefined ? host === undefined || host === null : host !== undefined && host !== null && last.hostOffset + last.length === host)
    ) {
      last.length += length;
      return;
    }
    const e: Mutable<LayerExtent> = { length, allocated, zero, data };
    // Where a piece's bytes are on the host, when it has a host cluster (QEMU reports it for zero and unallocated subclusters too).
    if (host !== undefined && host !== null) {
      e.hostOffset = host;
      if (hostFile !== undefined) e.hostFile = hostFile;
    }
    if (compressed) e.compressed = true;
    out.push(e);
  };
  // Status must describe completed writes: link the allocations in flight over the range first.
  await img.inflight.settle(Math.floor(offset / img.clusterSize), Math.floor((offset + length - 1) / img.clusterSize));
  const toExtents = (pieces: readonly Piece[]): void => {
    for (const p of pieces) {
      if (p.kind === 'data') push(p.length, true, false, true, p.host, false);
      else if (p.kind === 'zero') push(p.length, true, true, false, p.host, false);
      else if (p.kind === 'unallocated') push(p.length, false, false, false, p.host, false);
      else push(p.length, true, false, true, undefined, true);
    }
  };
  const span = img.clusterSize * img.l2Entries;
  const l1Index = Math.floor(offset / span);
  if (l1Index === Math.floor((offset + length - 1) / span)) {
    // One L2 table (every NBD READ of a sequential copy asks this): nothing to load ahead.
    toExtents(await mapChunk(img, { l1Index, offset, length }));
    return out;
  }
  // The L2 tables of the next chunks load in parallel while this one is mapped.
  const chunks = [...l2Chunks(img, offset, length)];
  const ahead = new Map<number, Promise<CachedTable | null>>();
  const prefetch = (k: number): void => {
    const c = chunks[k];
    if (c && !ahead.has(k)) ahead.set(k, acquireL2(img, c.l1Index).catch(() => null));
  };
  try {
    for (const [k, chunk] of chunks.entries()) {
      for (let j = k; j < k + STATUS_READ_AHEAD; j++) prefetch(j);
      const pieces = await mapChunk(img, chunk);
      const pinned = await ahead.get(k);
      ahead.delete(k);
      if (pinned) img.l2Cache.release(pinned);
      toExtents(pieces);
    }
  } finally {
    for (const t of ahead.values()) void t.then((pinned) => pinned && img.l2Cache.release(pinned));
  }
  return out;
}
