/**
 * Refcount changes over a whole mapping tree (one L1 table, its L2 tables and
 * the clusters they map), as QEMU's qcow2_update_snapshot_refcount does for
 * snapshot create (+1), apply (+1 new, -1 old), delete (-1), and the COPIED
 * flag rebuild (0) that follows each of them.
 *
 * A data cluster's refcount counts each (L1, L2) path to it, which is what
 * qemu-img check computes: incrementing a tree increments every L2 table and
 * every cluster below it, shared or not.
 *
 * Crash safety: callers flush refcount increases before anything points to
 * the new references, and decrease only after the last pointer is gone.
 */
import { VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import { type Qcow2Image } from './image.js';
import { compressedRefRange, readL1Entry, readL2Entry, referencedCluster, writeL1Entry } from './l2-entry.js';

export interface TreeRefcountOptions {
  /** +1, -1, or 0 (only rebuild the COPIED flags). */
  readonly addend: -1 | 0 | 1;
  /**
   * Recompute COPIED (bit 63) in the L2 entries and in `l1` from the refcounts:
   * set exactly where the refcount is 1. Only meaningful for the active tree.
   */
  readonly fixFlags: boolean;
}

/**
 * Applies `addend` to every reference of the tree under `l1` (raw big-endian
 * L1 entries) and, with `fixFlags`, rewrites the COPIED bits in its L2 tables
 * and in `l1` itself. Returns whether `l1` changed. Dirty L2 tables are left in
 * the cache, depending on the refcount cache when references were added.
 */
export async function adjustTreeRefcounts(img: Qcow2Image, l1: Uint8Array, options: TreeRefcountOptions): Promise<boolean> {
  const { addend, fixFlags } = options;
  const entrySize = img.geometry.extendedL2 ? 16 : 8;
  const entries = l1.length / 8;
  let l1Changed = false;
  if (fixFlags && addend > 0) await img.l2Cache.setDependency(img.refcounts.cache);
  for (let i = 0; i < entries; i++) {
    const { l2Offset, copied } = readL1Entry(l1, i, { clusterBits: img.clusterBits, file: img.file, tableOffset: 0 });
    if (l2Offset === 0) continue;
    const table = await img.l2Cache.acquire(l2Offset);
    try {
      for (let j = 0; j < img.l2Entries; j++) {
        const m = readL2Entry(table.data, j, { geometry: img.geometry, file: img.file, tableOffset: l2Offset });
        let refcount = 0;
        if (m.kind === 'compressed') {
          if (addend !== 0) {
            const r = compressedRefRange(m);
            await img.refcounts.update(r.start, r.length, addend);
          }
          continue; // compressed entries never carry COPIED
        }
        const host = referencedCluster(m);
        if (host !== null) {
          if (host % img.clusterSize !== 0) {
            throw new VdiskError('ECORRUPT', `'${img.file}': L2 table at ${hex(l2Offset)} index ${j}: cluster offset ${hex(host)} is not cluster aligned`, {
              file: img.file,
              offset: l2Offset + j * entrySize,
            });
          }
          if (!img.geometry.externalDataFile) {
            if (addend !== 0) await img.refcounts.update(host, img.clusterSize, addend);
            if (fixFlags) refcount = await img.refcounts.get(host);
          } else {
            refcount = 1;
          }
        }
        if (!fixFlags) continue;
        const at = j * entrySize;
        const old = table.data[at] ?? 0;
        const want = refcount === 1 ? old | 0x80 : old & 0x7f;
        if (want !== old) {
          table.data[at] = want;
          img.l2Cache.markDirty(table);
        }
      }
    } finally {
      img.l2Cache.release(table);
    }
    if (addend !== 0) await img.refcounts.update(l2Offset, img.clusterSize, addend);
    const l2Refcount = await img.refcounts.get(l2Offset);
    if (l2Refcount === 0) img.l2Cache.forget(l2Offset);
    if (fixFlags) {
      const want = l2Refcount === 1;
      if (want !== copied) {
        writeL1Entry(l1, i, l2Offset, want);
        l1Changed = true;
      }
    }
  }
  return l1Changed;
}

/** Clears COPIED in every L1 entry (a safe state: writes copy instead of writing in place). */
export function clearL1Copied(l1: Uint8Array): void {
  for (let i = 0; i < l1.length; i += 8) l1[i] = (l1[i] ?? 0) & 0x7f;
}
