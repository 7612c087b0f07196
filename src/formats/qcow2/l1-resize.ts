/**
 * The active layer's side of a resize: dropping the mappings past a new,
 * smaller end (and then the refcount blocks that count nothing, and the file's
 * unused end), and growing the L1 table for a larger disk. The driver writes
 * the new size into the header; these change the tables under it.
 */
import { l1EntriesFor } from './header.js';
import { l2OffsetAt, type Qcow2Image } from './image.js';
import { adjustTreeRefcounts } from './tree-refcounts.js';
import { discardGuest } from './zero-discard.js';

/** Header bytes of l1_size (4) and l1_table_offset (8), which follow each other. */
const HEADER_L1_FIELDS = 36;

/**
 * qcow2_co_truncate's shrink: the active layer loses its mappings past
 * `newLength`; the L1 table keeps its size (QEMU's qcow2_shrink_l1_table zeroes
 * the entries past the end). Snapshots keep their own L1 tables and disk sizes:
 * what they still reference stays allocated, only the active tree's
 * references go (a shared L2 table and the clusters under it lose one).
 * `flush` is the driver's: the cleared tail reaches the disk before the L1 entries change.
 */
export async function dropMappingsPast(img: Qcow2Image, newLength: number, flush: () => Promise<void>): Promise<void> {
  const clusterEnd = Math.ceil(newLength / img.clusterSize) * img.clusterSize;
  const keep = l1EntriesFor(newLength, img.clusterBits, img.geometry.extendedL2 ? 16 : 8);
  // The clusters past the end in the last L2 table kept: cleared one by one (a shared table is copied first).
  const tailEnd = Math.min(img.size, keep * img.l2Entries * img.clusterSize);
  if (clusterEnd < tailEnd && l2OffsetAt(img, keep - 1).l2Offset !== 0) await discardGuest(img, clusterEnd, tailEnd - clusterEnd, true);
  await flush();
  await img.l1Lock.run(async () => {
    const entries = img.l1.length / 8;
    if (keep >= entries) return;
    // Whole L2 tables past the end: the L1 entries go first, on disk, then the references they held.
    const dropped = new Uint8Array(img.l1.length);
    dropped.set(img.l1.subarray(keep * 8), keep * 8);
    if (dropped.every((b) => b === 0)) return;
    img.l1.fill(0, keep * 8);
    await img.host.write(img.l1.slice(keep * 8), img.l1Offset + keep * 8);
    await img.host.sync();
    await adjustTreeRefcounts(img, dropped, { addend: -1, fixFlags: false });
  });
}

/**
 * After a shrink, as qcow2_co_truncate: refcount blocks that count nothing
 * leave the table, and the file ends after its last cluster in use. (With
 * cache=none the file's reserved space is trimmed at close instead.) `flush`
 * is the driver's: it writes the freeing of the dropped blocks.
 */
export async function trimAfterShrink(img: Qcow2Image, flush: () => Promise<void>): Promise<void> {
  if ((await img.refcounts.dropUnusedBlocks()) > 0) await flush();
  if (img.refcounts.reservesSpace) return;
  const end = await img.refcounts.usedEnd();
  if (end > 0 && (await img.host.size()) > end) await img.host.truncate(end);
}

/**
 * Grows the L1 table to exactly `entries` (qcow2_grow_l1_table with exact
 * size): the new table is written and synced, then the header points at it,
 * then the old table's clusters are freed. `img.l1` and `img.l1Offset` follow.
 */
export async function growL1(img: Qcow2Image, entries: number): Promise<void> {
  await img.l1Lock.run(async () => {
    const bytes = entries * 8;
    const clusters = Math.ceil(bytes / img.clusterSize);
    const newOffset = await img.refcounts.allocClusters(clusters);
    await img.refcounts.cache.flushWithDependencies();
    const table = new Uint8Array(clusters * img.clusterSize);
    table.set(img.l1);
    await img.host.write(table, newOffset);
    await img.host.sync();
    const hdr = new Uint8Array(12);
    const v = new DataView(hdr.buffer);
    v.setUint32(0, entries, false);
    v.setBigUint64(4, BigInt(newOffset), false);
    await img.host.write(hdr, HEADER_L1_FIELDS);
    await img.host.sync();
    const oldOffset = img.l1Offset;
    const oldBytes = img.l1.length;
    img.l1 = table.slice(0, bytes);
    img.l1Offset = newOffset;
    if (oldBytes > 0) await img.refcounts.free(oldOffset, Math.ceil(oldBytes / img.clusterSize) * img.clusterSize);
  });
}
