/**
 * The arithmetic of `qemu-img measure` (qcow2_measure and raw_measure in QEMU's
 * block drivers): the file size an image of a given virtual size needs when
 * fully allocated, and when holding only the clusters an existing image has data in.
 */
import { refcountMetadataBlocks } from '../formats/qcow2/create.js';

/** qcow2's most L1 bytes (QCOW_MAX_L1_SIZE). */
const MAX_L1_BYTES = 32 * 1024 * 1024;

export interface Qcow2Geometry {
  readonly clusterSize: number;
  readonly refcountOrder: number;
  readonly extendedL2: boolean;
}

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

/** True when the L1 table for `virtualSize` would exceed QEMU's limit ("The image size is too large"). */
export function qcow2TooLarge(virtualSize: number, g: Qcow2Geometry): boolean {
  const l2Entry = g.extendedL2 ? 16 : 8;
  const l2Tables = Math.ceil(roundUp(virtualSize, g.clusterSize) / g.clusterSize / (g.clusterSize / l2Entry));
  return l2Tables * 8 > MAX_L1_BYTES;
}

/** qcow2_calc_prealloc_size: header, L2 tables, L1 table, refcount structures and every data cluster. */
export function qcow2FullyAllocatedSize(virtualSize: number, g: Qcow2Geometry): number {
  const cs = g.clusterSize;
  const aligned = roundUp(virtualSize, cs);
  const l2Entry = g.extendedL2 ? 16 : 8;
  let meta = cs; // header
  const l2Entries = roundUp(aligned / cs, cs / l2Entry);
  meta += l2Entries * l2Entry;
  const l1Entries = roundUp((l2Entries * l2Entry) / cs, cs / 8);
  meta += l1Entries * 8;
  const blocks = refcountMetadataBlocks((meta + aligned) / cs, { clusterSize: cs, refcountOrder: g.refcountOrder, generous: false });
  const table = Math.ceil(blocks / (cs / 8));
  meta += (blocks + table) * cs;
  return meta + aligned;
}

/** One persistent bitmap of the measured image. */
export interface MeasuredBitmap {
  readonly name: string;
  readonly granularity: number;
}

/**
 * qcow2_measure's bitmaps figure: each bitmap fully allocated, its table
 * rounded to clusters, plus the bitmap directory rounded to a cluster.
 */
export function qcow2BitmapsSize(bitmaps: readonly MeasuredBitmap[], diskSize: number, clusterSize: number): number {
  let total = 0;
  let directory = 0;
  for (const b of bitmaps) {
    const bits = Math.ceil(diskSize / b.granularity);
    const clusters = Math.ceil(Math.ceil(bits / 8) / clusterSize);
    total += clusters * clusterSize;
    total += roundUp(clusters * 8, clusterSize);
    directory += roundUp(24 + Buffer.byteLength(b.name, 'utf8'), 8);
  }
  return total + roundUp(directory, clusterSize);
}

/** Adds up the clusters an extent list has data in (each data run widened to whole clusters, no cluster counted twice). */
export class DataClusterCounter {
  private bytes = 0;
  /** End of the last cluster already counted. */
  private countedTo = 0;

  constructor(private readonly clusterSize: number) {}

  add(offset: number, length: number): void {
    const start = Math.max(offset - (offset % this.clusterSize), this.countedTo);
    const end = roundUp(offset + length, this.clusterSize);
    if (end > start) {
      this.bytes += end - start;
      this.countedTo = end;
    }
  }

  get total(): number {
    return this.bytes;
  }
}
