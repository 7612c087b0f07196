/**
 * Turning v3 zero clusters into something a v2 reader understands, for the
 * downgrade to compat=0.10 (QEMU's qcow2_expand_zero_clusters): a zero
 * cluster without a host cluster becomes unallocated when no backing file can
 * show through, else it gets a fresh cluster of zeros; a zero cluster with a
 * host cluster has that cluster zeroed. The active L1 and every snapshot's L1
 * are walked; each L2 table is visited once.
 *
 * Order: zeros and refcounts reach the disk before the L2 entries that point
 * to them (the L2 cache depends on the refcount cache and on a sync).
 */
import type { ProgressCallback } from '../driver.js';
import { readL1Entry, readL2Entry, writeL2Entry } from './l2-entry.js';
import type { Qcow2MetaContext } from './meta-context.js';
import { loadSnapshots } from './snapshot-ops.js';

async function l1Tables(ctx: Qcow2MetaContext): Promise<Uint8Array[]> {
  const { img } = ctx;
  const out = [img.l1];
  for (const sn of (await loadSnapshots(ctx)).snapshots) {
    const buf = new Uint8Array(sn.l1Size * 8);
    if (buf.length > 0) await img.host.read(buf, sn.l1TableOffset);
    out.push(buf);
  }
  return out;
}

export async function expandZeroClusters(ctx: Qcow2MetaContext, options: { readonly hasBacking: boolean; readonly progress?: ProgressCallback | undefined }): Promise<void> {
  const { img } = ctx;
  const zeros = new Uint8Array(img.clusterSize);
  const tables = await l1Tables(ctx);
  const l2Offsets: number[] = [];
  const seen = new Set<number>();
  for (const l1 of tables) {
    for (let i = 0; i < l1.length / 8; i++) {
      const { l2Offset } = readL1Entry(l1, i, { clusterBits: img.clusterBits, file: img.file, tableOffset: 0 });
      if (l2Offset !== 0 && !seen.has(l2Offset)) {
        seen.add(l2Offset);
        l2Offsets.push(l2Offset);
      }
    }
  }
  await img.l2Cache.setDependency(img.refcounts.cache);
  let done = 0;
  for (const l2Offset of l2Offsets) {
    const l2Refcount = await img.refcounts.get(l2Offset);
    const table = await img.l2Cache.acquire(l2Offset);
    try {
      for (let j = 0; j < img.l2Entries; j++) {
        const m = readL2Entry(table.data, j, { geometry: img.geometry, file: img.file, tableOffset: l2Offset });
        if (m.kind === 'zero-plain') {
          if (!options.hasBacking) {
            writeL2Entry(table.data, j, { kind: 'unallocated' }, img.geometry);
          } else {
            const host = await img.refcounts.allocClusters(1);
            if (l2Refcount > 1) await img.refcounts.update(host, img.clusterSize, l2Refcount - 1);
            await img.host.write(zeros, host);
            writeL2Entry(table.data, j, { kind: 'normal', hostOffset: host, copied: l2Refcount === 1 }, img.geometry);
          }
        } else if (m.kind === 'zero-alloc') {
          await img.host.write(zeros, m.hostOffset);
          const copied = (await img.refcounts.get(m.hostOffset)) === 1;
          writeL2Entry(table.data, j, { kind: 'normal', hostOffset: m.hostOffset, copied }, img.geometry);
        } else {
          continue;
        }
        img.l2Cache.requireSyncBeforeWrite();
        img.l2Cache.markDirty(table);
      }
    } finally {
      img.l2Cache.release(table);
    }
    options.progress?.(++done, l2Offsets.length);
  }
  await ctx.flush();
}
