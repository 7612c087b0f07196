/**
 * Write-zeroes, discard and compressed writes (FACTS.md 1.7, 1.8): whole
 * clusters (whole subclusters with extended L2) change their L2 entries;
 * partial ones get real zeros through the write path.
 */
import { VdiskError } from '../../errors.js';
import { ALL_SUBCLUSTERS, encodeCompressedEntry, readL2Entry, writeL2Entry, type L2Mapping } from './l2-entry.js';
import { l2Chunks, l2IndexOf, mappingAt, withSlotLock, type Qcow2Image } from './image.js';
import { layerStatus } from './read-path.js';
import { acquireL2ForWrite, releaseMappings } from './l2-update.js';
import { writeGuest } from './write-path.js';

const ZERO_CHUNK = 1024 * 1024;

/** Writes real zeros over [offset, offset+length) in bounded pieces. */
async function writeRealZeros(img: Qcow2Image, offset: number, length: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(length, ZERO_CHUNK));
  for (let pos = offset; pos < offset + length; pos += zeros.length) {
    const n = Math.min(zeros.length, offset + length - pos);
    await writeGuest(img, pos, zeros.subarray(0, n));
  }
}

function hostOf(m: L2Mapping): number | null {
  return m.kind === 'normal' || m.kind === 'zero-alloc' || m.kind === 'subclusters' ? m.hostOffset : null;
}

type EntryRewrite = (old: L2Mapping, sub: { first: number; last: number } | null) => { mapping: L2Mapping; drop: boolean } | null;

/**
 * Applies `rewrite` to every whole cluster (or whole-subcluster run with
 * extended L2) of the range; returns the partial head/tail pieces left over.
 */
async function rewriteEntries(img: Qcow2Image, range: { offset: number; length: number; subclusterGranular: boolean }, rewrite: EntryRewrite): Promise<Array<{ offset: number; length: number }>> {
  const leftovers: Array<{ offset: number; length: number }> = [];
  const gran = range.subclusterGranular ? img.clusterSize / img.subclusters : img.clusterSize;
  const end = range.offset + range.length;
  // A range ending at the end of the disk covers its last partial cluster whole.
  const alignedEnd = end === img.size ? Math.ceil(end / gran) * gran : end - (end % gran);
  const alignedStart = Math.ceil(range.offset / gran) * gran;
  if (alignedStart >= alignedEnd) return [{ offset: range.offset, length: range.length }];
  if (alignedStart > range.offset) leftovers.push({ offset: range.offset, length: alignedStart - range.offset });
  if (alignedEnd < end) leftovers.push({ offset: alignedEnd, length: end - alignedEnd });
  for (const chunk of l2Chunks(img, alignedStart, alignedEnd - alignedStart)) {
    await withSlotLock(img, chunk.l1Index, async () => {
      const table = await acquireL2ForWrite(img, chunk.l1Index);
      const dropped: L2Mapping[] = [];
      try {
        // Wait for writes in flight on these clusters; the rewrite below has no await.
        const first = Math.floor(chunk.offset / img.clusterSize);
        const last = Math.floor((chunk.offset + chunk.length - 1) / img.clusterSize);
        for (let w = img.inflight.busy(first, last); w !== null; w = img.inflight.busy(first, last)) await w;
        for (let pos = chunk.offset; pos < chunk.offset + chunk.length; ) {
          const clusterStart = pos - (pos % img.clusterSize);
          const cEnd = Math.min(chunk.offset + chunk.length, clusterStart + img.clusterSize);
          const index = l2IndexOf(img, pos);
          const old = mappingAt(img, table, index);
          const whole = pos === clusterStart && cEnd - clusterStart === img.clusterSize;
          const sub = whole || img.subclusters === 1 ? null : { first: (pos - clusterStart) / gran, last: Math.ceil((cEnd - clusterStart) / gran) - 1 };
          const r = rewrite(old, sub);
          if (r) {
            writeL2Entry(table.data, index, r.mapping, img.geometry);
            if (r.drop) dropped.push(old);
          }
          pos = cEnd;
        }
        img.l2Cache.markDirty(table);
        await releaseMappings(img, dropped);
      } finally {
        img.l2Cache.release(table);
      }
    });
  }
  return leftovers;
}

/** Masks for subclusters first..last. */
function subMask(sub: { first: number; last: number }): number {
  let m = 0;
  for (let i = sub.first; i <= sub.last; i++) m |= 1 << i;
  return m >>> 0;
}

function masksOf(m: L2Mapping): { alloc: number; zero: number } {
  switch (m.kind) {
    case 'normal':
      return { alloc: ALL_SUBCLUSTERS, zero: 0 };
    case 'zero-alloc':
    case 'zero-plain':
      return { alloc: 0, zero: ALL_SUBCLUSTERS };
    case 'subclusters':
      return { alloc: m.allocMask, zero: m.zeroMask };
    default:
      return { alloc: 0, zero: 0 };
  }
}

export async function zeroGuest(img: Qcow2Image, offset: number, length: number, flags: { mayUnmap: boolean }): Promise<void> {
  const v2 = img.version === 2;
  if (img.dataFileRaw || (v2 && img.backing !== null)) {
    await writeRealZeros(img, offset, length);
    return;
  }
  if (v2) {
    // No zero flag: unallocated reads as zeros without a backing file.
    const toUnallocated: EntryRewrite = (old) => (old.kind === 'unallocated' ? null : { mapping: { kind: 'unallocated' }, drop: true });
    const rest = await rewriteEntries(img, { offset, length, subclusterGranular: false }, toUnallocated);
    await zeroPieces(img, rest, img.clusterSize, toUnallocated);
    return;
  }
  const ext = img.subclusters > 1;
  const toZero: EntryRewrite = (old, sub) => {
    const host = hostOf(old);
    const unmap = old.kind === 'compressed' || (flags.mayUnmap && host !== null && !img.geometry.externalDataFile);
    if (sub === null) {
      if (unmap || host === null) return { mapping: { kind: 'zero-plain' }, drop: unmap };
      return { mapping: { kind: 'zero-alloc', hostOffset: host, copied: 'copied' in old ? old.copied : false }, drop: false };
    }
    // Part of a cluster with subclusters: set the zero bits, clear the alloc bits.
    if (old.kind === 'compressed') return null; // handled below by real zeros
    const mask = subMask(sub);
    const { alloc, zero } = masksOf(old);
    const m: L2Mapping = {
      kind: 'subclusters',
      hostOffset: host,
      copied: host !== null && 'copied' in old ? old.copied : false,
      allocMask: (alloc & ~mask) >>> 0,
      zeroMask: (zero | mask) >>> 0,
    };
    return { mapping: normalize(m), drop: false };
  };
  const rest = await rewriteEntries(img, { offset, length, subclusterGranular: ext }, toZero);
  await zeroPieces(img, rest, ext ? img.clusterSize / img.subclusters : img.clusterSize, toZero);
  if (ext) await zeroPartialCompressed(img, offset, length);
}

/**
 * The partial (sub)cluster pieces of a zero-write. Like QEMU's
 * qcow2_co_pwrite_zeroes: when the rest of the (sub)cluster already reads as
 * zeros and it holds no data of this layer (unallocated, or a zero cluster), the
 * whole (sub)cluster gets the zero treatment instead of allocating a cluster and
 * writing zeros; otherwise the piece is written with real zeros.
 */
async function zeroPieces(img: Qcow2Image, pieces: ReadonlyArray<{ offset: number; length: number }>, granule: number, rewrite: EntryRewrite): Promise<void> {
  for (const piece of pieces) {
    const end = piece.offset + piece.length;
    for (let pos = piece.offset; pos < end; ) {
      const start = pos - (pos % granule);
      const stop = Math.min(end, start + granule);
      const granuleEnd = Math.min(start + granule, img.size);
      if (await readsZeroWithoutData(img, start, granuleEnd)) {
        let raced = false;
        // Re-checked under the table lock: a write may have allocated it since.
        await rewriteEntries(img, { offset: start, length: granuleEnd - start, subclusterGranular: granule < img.clusterSize }, (old, sub) => {
          if (holdsData(old, sub)) {
            raced = true;
            return null;
          }
          return rewrite(old, sub);
        });
        if (raced) await writeRealZeros(img, pos, stop - pos);
      } else {
        await writeRealZeros(img, pos, stop - pos);
      }
      pos = stop;
    }
  }
}

/** The (sub)cluster range holds no data in this layer, and what falls through to the backing reads as zeros. */
async function readsZeroWithoutData(img: Qcow2Image, start: number, end: number): Promise<boolean> {
  let pos = start;
  for (const e of await layerStatus(img, start, end - start)) {
    if (e.data) return false;
    // Unallocated here: the backing shows through; its block status decides (QEMU's is_zero).
    const backing = img.backing;
    if (!e.allocated && backing !== null && pos < backing.length) {
      if (!backing.isZero || !(await backing.isZero(pos, e.length))) return false;
    }
    pos += e.length;
  }
  return true;
}

function holdsData(m: L2Mapping, sub: { first: number; last: number } | null): boolean {
  if (m.kind === 'normal' || m.kind === 'compressed') return true;
  if (m.kind !== 'subclusters') return false;
  const mask = sub === null ? ALL_SUBCLUSTERS : subMask(sub);
  return (m.allocMask & mask) !== 0;
}

/** Subcluster zeroing cannot touch a compressed cluster: zero those ranges by writing. */
async function zeroPartialCompressed(img: Qcow2Image, offset: number, length: number): Promise<void> {
  const end = offset + length;
  for (let pos = offset; pos < end; ) {
    const clusterStart = pos - (pos % img.clusterSize);
    const cEnd = Math.min(end, clusterStart + img.clusterSize);
    const l1Index = Math.floor(pos / (img.clusterSize * img.l2Entries));
    const table = await acquireL2ForWrite(img, l1Index);
    let compressed = false;
    try {
      compressed = readL2Entry(table.data, l2IndexOf(img, pos), { geometry: img.geometry, file: img.file, tableOffset: table.offset }).kind === 'compressed';
    } finally {
      img.l2Cache.release(table);
    }
    if (compressed) await writeRealZeros(img, pos, cEnd - pos);
    pos = cEnd;
  }
}

function normalize(m: Extract<L2Mapping, { kind: 'subclusters' }>): L2Mapping {
  if (m.hostOffset === null) {
    if (m.zeroMask === ALL_SUBCLUSTERS) return { kind: 'zero-plain' };
    if (m.zeroMask === 0) return { kind: 'unallocated' };
    return m;
  }
  if (m.allocMask === ALL_SUBCLUSTERS) return { kind: 'normal', hostOffset: m.hostOffset, copied: m.copied };
  if (m.zeroMask === ALL_SUBCLUSTERS) return { kind: 'zero-alloc', hostOffset: m.hostOffset, copied: m.copied };
  return m;
}

/**
 * Guest discard (QEMU discard_in_l2_slice, not full): whole clusters only;
 * they read as zeros afterwards on v3 when something could show through.
 * `full` clears entries so the backing shows through (make-empty, shrink).
 */
export async function discardGuest(img: Qcow2Image, offset: number, length: number, full = false): Promise<void> {
  // v2 has no zero flag: discarding would expose the backing file (QEMU: ENOTSUP, ignored).
  if (!full && img.version === 2 && img.backing !== null) return;
  await rewriteEntries(img, { offset, length, subclusterGranular: false }, (old) => {
    // QEMU's cluster "allocated": it has a host cluster (normal, zero-alloc, compressed).
    const drop = hostOf(old) !== null || old.kind === 'compressed';
    if (full) return old.kind === 'unallocated' ? null : { mapping: { kind: 'unallocated' }, drop };
    // Nothing shows through and nothing is stored: already reads as zeros, left as it is.
    if (img.backing === null && !drop) return null;
    if (img.version === 2) return { mapping: { kind: 'unallocated' }, drop };
    return { mapping: { kind: 'zero-plain' }, drop };
  });
}

/** Writes one whole cluster compressed (qcow2_co_pwritev_compressed). */
export async function writeCompressedCluster(img: Qcow2Image, offset: number, data: Uint8Array): Promise<void> {
  if (img.geometry.externalDataFile) throw new VdiskError('ENOTSUP', `'${img.file}': compression is not supported with an external data file`, { file: img.file });
  if (offset % img.clusterSize !== 0) throw new VdiskError('EINVAL', `compressed write at ${offset} is not cluster aligned`, { file: img.file, offset });
  const lastCluster = offset + img.clusterSize > img.size;
  if (data.length !== img.clusterSize && !(lastCluster && offset + data.length === img.size)) {
    throw new VdiskError('EINVAL', `compressed writes must cover a whole cluster (${data.length} bytes at ${offset})`, { file: img.file, offset });
  }
  let cluster = data;
  if (data.length < img.clusterSize) {
    cluster = new Uint8Array(img.clusterSize);
    cluster.set(data);
  }
  const packed = img.codec.compress(cluster);
  if (packed === null) {
    await writeGuest(img, offset, data);
    return;
  }
  const l1Index = Math.floor(offset / (img.clusterSize * img.l2Entries));
  await withSlotLock(img, l1Index, async () => {
    const table = await acquireL2ForWrite(img, l1Index);
    try {
      const cluster = Math.floor(offset / img.clusterSize);
      for (let w = img.inflight.busy(cluster, cluster); w !== null; w = img.inflight.busy(cluster, cluster)) await w;
      const index = l2IndexOf(img, offset);
      const old = mappingAt(img, table, index);
      if (hostOf(old) !== null || old.kind === 'compressed') {
        throw new VdiskError('EIO', `'${img.file}': compressed write to an allocated cluster at ${offset}`, { file: img.file, offset });
      }
      const coffset = await img.refcounts.allocBytes(packed.length);
      await img.host.write(packed, coffset);
      await img.l2Cache.setDependency(img.refcounts.cache);
      const entry = encodeCompressedEntry(coffset, packed.length, img.clusterBits);
      const view = new DataView(table.data.buffer, table.data.byteOffset, table.data.byteLength);
      const pos = index * (img.geometry.extendedL2 ? 16 : 8);
      view.setBigUint64(pos, entry, false);
      if (img.geometry.extendedL2) view.setBigUint64(pos + 8, 0n, false);
      img.l2Cache.markDirty(table);
    } finally {
      img.l2Cache.release(table);
    }
  });
}

