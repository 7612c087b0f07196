/**
 * Changing the refcount width of an image (qemu-img amend -o refcount_bits=N):
 * a complete new set of refcount blocks and a new refcount table, written
 * after the end of the file so they overlap nothing, then switched to in one
 * header write. The old structures are not counted in the new refcounts (they
 * become free space). A crash before the header write leaves the image as it
 * was, with unreferenced space at its end.
 */
import { VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import type { ProgressCallback } from '../driver.js';
import { MAX_REFCOUNT_TABLE_BYTES, parseHeaderCluster, serializeHeaderCluster, withHeader } from './header.js';
import type { Qcow2MetaContext } from './meta-context.js';
import { getRefcount, refcountBlockEntries, setRefcount } from './refcount-block.js';

/** Every cluster's current refcount (index = cluster number), from the stored refcount blocks. */
async function readAllRefcounts(ctx: Qcow2MetaContext, clusters: number): Promise<Float64Array> {
  const { img } = ctx;
  const h = ctx.parsed().header;
  const cs = img.clusterSize;
  const entries = refcountBlockEntries(cs, h.refcountOrder);
  const table = new Uint8Array(h.refcountTableClusters * cs);
  await img.host.read(table, h.refcountTableOffset);
  const tv = new DataView(table.buffer);
  const out = new Float64Array(clusters);
  const block = new Uint8Array(cs);
  for (let bi = 0; bi * entries < clusters && bi < table.length / 8; bi++) {
    const off = Number(tv.getBigUint64(bi * 8, false) & 0xfffffffffffffe00n);
    if (off === 0) continue;
    await img.host.read(block, off);
    const last = Math.min(clusters, (bi + 1) * entries);
    for (let c = bi * entries; c < last; c++) out[c] = getRefcount(block, c - bi * entries, h.refcountOrder);
  }
  return out;
}

/** The clusters the current refcount table and its blocks occupy. */
async function oldStructureClusters(ctx: Qcow2MetaContext): Promise<number[]> {
  const { img } = ctx;
  const h = ctx.parsed().header;
  const cs = img.clusterSize;
  const out: number[] = [];
  for (let k = 0; k < h.refcountTableClusters; k++) out.push(h.refcountTableOffset / cs + k);
  const table = new Uint8Array(h.refcountTableClusters * cs);
  await img.host.read(table, h.refcountTableOffset);
  const tv = new DataView(table.buffer);
  for (let i = 0; i < table.length / 8; i++) {
    const off = Number(tv.getBigUint64(i * 8, false) & 0xfffffffffffffe00n);
    if (off !== 0) out.push(off / cs);
  }
  return out;
}

/**
 * Rewrites the refcount structures with `1 << order` bits per entry. The
 * caller has flushed the driver; afterwards the driver's refcount state is
 * stale (the caller must not use it again without reopening).
 */
export async function changeRefcountOrder(ctx: Qcow2MetaContext, order: number, progress?: ProgressCallback): Promise<void> {
  const { img } = ctx;
  const cs = img.clusterSize;
  const fileClusters = Math.ceil((await img.host.size()) / cs);
  const counts = await readAllRefcounts(ctx, fileClusters);
  for (const c of await oldStructureClusters(ctx)) if (c < counts.length) counts[c] = 0;
  const max = order === 6 ? Number.MAX_SAFE_INTEGER : 2 ** (2 ** order) - 1;
  counts.forEach((n, c) => {
    if (n > max) {
      throw new VdiskError(
        'EINVAL',
        `Cannot decrease refcount entry width to ${2 ** order} bits: Cluster at offset ${hex(c * cs)} has a refcount of ${n}`,
        { file: img.file, offset: c * cs, field: 'refcount_bits' },
      );
    }
  });
  const entries = refcountBlockEntries(cs, order);
  // New area at the end of the file: blocks, then the table; it must cover itself.
  const start = fileClusters;
  let blocks = 0;
  let tableClusters = 0;
  for (;;) {
    const total = start + blocks + tableClusters;
    const needBlocks = Math.ceil(total / entries);
    const needTable = Math.max(1, Math.ceil((needBlocks * 8) / cs));
    if (needBlocks === blocks && needTable === tableClusters) break;
    blocks = needBlocks;
    tableClusters = needTable;
  }
  if (tableClusters * cs > MAX_REFCOUNT_TABLE_BYTES) {
    throw new VdiskError('EFBIG', `'${img.file}': the refcount table would exceed ${MAX_REFCOUNT_TABLE_BYTES} bytes`, { file: img.file, field: 'refcount_table_clusters' });
  }
  const end = start + blocks + tableClusters;
  const all = new Float64Array(end);
  all.set(counts);
  all.fill(1, counts.length);
  const table = new Uint8Array(tableClusters * cs);
  const tv = new DataView(table.buffer);
  for (let bi = 0; bi < blocks; bi++) {
    const buf = new Uint8Array(cs);
    const last = Math.min(all.length, (bi + 1) * entries);
    for (let c = bi * entries; c < last; c++) {
      const n = all[c] ?? 0;
      if (n !== 0) setRefcount(buf, c - bi * entries, order, n);
    }
    const at = (start + bi) * cs;
    await img.host.write(buf, at);
    tv.setBigUint64(bi * 8, BigInt(at), false);
    progress?.(bi + 1, blocks + 1);
  }
  const tableOffset = (start + blocks) * cs;
  await img.host.write(table, tableOffset);
  await img.host.sync();
  const next = withHeader(ctx.parsed(), { refcountOrder: order, refcountTableOffset: tableOffset, refcountTableClusters: tableClusters });
  const cluster0 = serializeHeaderCluster(next, cs);
  await img.host.write(cluster0, 0);
  await img.host.sync();
  ctx.setParsed(parseHeaderCluster(cluster0, { file: img.file, fileSize: await img.host.size() }));
  progress?.(blocks + 1, blocks + 1);
}
