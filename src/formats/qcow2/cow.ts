/**
 * Copy-on-write geometry and content of one cluster being written: which
 * bytes around the guest data must be copied into the (new or partially
 * allocated) host cluster, their content as the guest currently reads them,
 * and the L2 mapping once written. Subcluster-granular with extended L2.
 */
import { ALL_SUBCLUSTERS, subclusterState, type L2Mapping } from './l2-entry.js';
import { readBacking, readCompressed, type Qcow2Image } from './image.js';

/** The state of a cluster that COW copies from. */
export interface CowSource {
  readonly old: L2Mapping;
  /** Guest offset of the cluster. */
  readonly guestCluster: number;
  /** The host cluster is kept (only unallocated/zero subclusters get filled). */
  readonly inPlace: boolean;
}

export function hostOf(m: L2Mapping): number | null {
  return m.kind === 'normal' || m.kind === 'zero-alloc' || m.kind === 'subclusters' ? m.hostOffset : null;
}

export function copiedOf(m: L2Mapping): boolean {
  return (m.kind === 'normal' || m.kind === 'zero-alloc' || m.kind === 'subclusters') && m.copied;
}

function subclusterSize(img: Qcow2Image): number {
  return img.clusterSize / img.subclusters;
}

function stateAt(img: Qcow2Image, m: L2Mapping, i: number): ReturnType<typeof subclusterState> {
  return subclusterState(m, img.subclusters === 1 ? 0 : i);
}

/** What the COW geometry of a cluster depends on (a record carries it too). */
type CowShape = Pick<CowSource, 'old' | 'inPlace'>;

/** Subcluster `i` of the old cluster holds data that moves with a new host cluster. */
function moves(img: Qcow2Image, src: CowShape, i: number): boolean {
  const s = stateAt(img, src.old, i);
  return !src.inPlace && (s === 'data' || s === 'compressed');
}

/**
 * Writing intra-cluster [a, b) of an in-place cluster needs no COW and no L2
 * change: every touched subcluster already holds data.
 */
export function isPlainOverwrite(img: Qcow2Image, src: CowSource, range: { a: number; b: number }): boolean {
  if (!src.inPlace) return false;
  const sc = subclusterSize(img);
  for (let i = Math.floor(range.a / sc); i <= Math.floor((range.b - 1) / sc); i++) if (stateAt(img, src.old, i) !== 'data') return false;
  return true;
}

/** Where the head COW starts (intra offset) for data starting at `a`. */
export function headStart(img: Qcow2Image, src: CowSource, a: number): number {
  const sc = subclusterSize(img);
  const iA = Math.floor(a / sc);
  let start = a % sc === 0 || (stateAt(img, src.old, iA) === 'data' && src.inPlace) ? a : iA * sc;
  for (let i = 0; i < iA; i++) {
    if (moves(img, src, i)) {
      start = Math.min(start, i * sc);
      break;
    }
  }
  return start;
}

/** Where the tail COW ends (intra offset) for data ending at `b`. */
export function tailEnd(img: Qcow2Image, src: CowShape, b: number): number {
  const sc = subclusterSize(img);
  const iB = Math.floor((b - 1) / sc);
  let end = b % sc === 0 || (stateAt(img, src.old, iB) === 'data' && src.inPlace) ? b : (iB + 1) * sc;
  for (let i = img.subclusters - 1; i > iB; i--) {
    if (moves(img, src, i)) {
      end = Math.max(end, (i + 1) * sc);
      break;
    }
  }
  return end;
}

/** Every byte of the old cluster reads as zero (so COW from it copies zeros). */
export function cowReadsZero(img: Qcow2Image, old: L2Mapping): boolean {
  return img.backing === null && (old.kind === 'unallocated' || old.kind === 'zero-plain' || old.kind === 'zero-alloc');
}

/** Intra-cluster [x, y) of the cluster as the guest reads it now (before the write). */
export async function readOld(img: Qcow2Image, src: CowSource, range: { x: number; y: number }): Promise<Uint8Array> {
  const m = src.old;
  const length = range.y - range.x;
  if (length <= 0) return new Uint8Array(0);
  if (cowReadsZero(img, m)) return zeros(img, length);
  const out = new Uint8Array(length);
  if (m.kind === 'compressed') {
    const cluster = await readCompressed(img, m);
    out.set(cluster.subarray(range.x, range.y));
    return out;
  }
  const sc = subclusterSize(img);
  const host = hostOf(m);
  const reads: Promise<void>[] = [];
  for (let pos = range.x; pos < range.y; ) {
    const i = Math.floor(pos / sc);
    const end = Math.min(range.y, (i + 1) * sc);
    const dst = out.subarray(pos - range.x, end - range.x);
    const state = stateAt(img, m, i);
    if (state === 'data' && host !== null) reads.push(img.dataHost.read(dst, host + pos));
    else if (state === 'unallocated') reads.push(readBacking(img, src.guestCluster + pos, dst));
    pos = end;
  }
  await Promise.all(reads);
  return out;
}

/**
 * A read-only zero buffer of `length` bytes, shared per image: it only ever
 * goes to host writes, never to reads.
 */
function zeros(img: Qcow2Image, length: number): Uint8Array {
  const z = img.inflight.zeroBuffer(img.clusterSize);
  return length <= z.length ? z.subarray(0, length) : new Uint8Array(length);
}

/** The mapping after intra [a, b) (plus its COW) was written at `host`, from `base`. */
export function newMapping(img: Qcow2Image, base: L2Mapping, w: { a: number; b: number; host: number }): L2Mapping {
  if (img.subclusters === 1) return { kind: 'normal', hostOffset: w.host, copied: true };
  const sc = subclusterSize(img);
  const iA = Math.floor(w.a / sc);
  const iB = Math.floor((w.b - 1) / sc);
  let alloc = 0;
  let zero = 0;
  for (let i = 0; i < img.subclusters; i++) {
    const bit = (1 << i) >>> 0;
    if (i >= iA && i <= iB) {
      alloc |= bit;
      continue;
    }
    const s = subclusterState(base, i);
    if (s === 'data' || s === 'compressed') alloc |= bit;
    else if (s === 'zero') zero |= bit;
  }
  alloc >>>= 0;
  zero >>>= 0;
  if (alloc === ALL_SUBCLUSTERS) return { kind: 'normal', hostOffset: w.host, copied: true };
  return { kind: 'subclusters', hostOffset: w.host, copied: true, allocMask: alloc, zeroMask: zero };
}
