/**
 * Internal snapshots of a qcow2 image: list, create, apply (revert) and
 * delete, in QEMU's order (block/qcow2-snapshot.c).
 *
 * Crash-safe order for every operation: new references are counted and
 * flushed before anything on disk points to them; the snapshot table is
 * written to fresh clusters and the header switched to it in one 12-byte
 * write; references are dropped only after the last pointer to them is gone.
 * A crash leaves leaks at worst.
 */
import { VdiskError } from '../../errors.js';
import { hex, toSafeNumber } from '../../util/int64.js';
import type { SnapshotCreateOptions, SnapshotInfo, SnapshotOps } from '../driver.js';
import { MAX_L1_BYTES } from './header.js';
import type { Qcow2MetaContext } from './meta-context.js';
import { MAX_SNAPSHOT_TABLE_BYTES, parseSnapshotTable, serializeSnapshotTable, type Qcow2Snapshot } from './snapshot-table.js';
import { adjustTreeRefcounts, clearL1Copied } from './tree-refcounts.js';

const HEADER_NB_SNAPSHOTS = 60;
/** Bytes of extra data QEMU knows and always writes: vm_state_size_large, disk_size, icount. */
const KNOWN_EXTRA = 24;
/** QEMU's QCOW_MAX_SNAPSHOTS. */
const MAX_SNAPSHOTS = 65536;
const MAX_NAME_BYTES = 65535;

export interface LoadedSnapshots {
  readonly snapshots: Qcow2Snapshot[];
  /** Byte size of the table on disk (what to free when it is replaced). */
  readonly size: number;
}

/** Reads and validates the snapshot table the header points to. */
export async function loadSnapshots(ctx: Qcow2MetaContext): Promise<LoadedSnapshots> {
  const h = ctx.parsed().header;
  if (h.nbSnapshots === 0) return { snapshots: [], size: 0 };
  const { img } = ctx;
  const fileSize = await img.host.size();
  const available = Math.max(0, Math.min(fileSize - h.snapshotsOffset, MAX_SNAPSHOT_TABLE_BYTES));
  // Entries are variable-sized: read a guess and grow it until the table fits.
  let want = Math.min(available, Math.max(4096, h.nbSnapshots * 128));
  for (;;) {
    const buf = new Uint8Array(want);
    await img.host.read(buf, h.snapshotsOffset);
    try {
      return parseSnapshotTable(buf, { file: img.file, fileSize, offset: h.snapshotsOffset, count: h.nbSnapshots });
    } catch (e) {
      if (want >= available) throw e;
      want = Math.min(available, want * 2);
    }
  }
}

/** The public description of a table entry (what qemu-img info and snapshot -l print). */
export function describeSnapshot(sn: Qcow2Snapshot): SnapshotInfo {
  const vmState = sn.vmStateSizeLarge ?? BigInt(sn.vmStateSize);
  const icount = sn.icount === null || sn.icount === -1n ? undefined : Number(sn.icount);
  return {
    id: sn.id,
    name: sn.name,
    vmStateSize: Number(vmState),
    dateSec: sn.dateSec,
    dateNsec: sn.dateNsec,
    vmClockNsec: Number(sn.vmClockNsec),
    ...(icount === undefined ? {} : { icount }),
  };
}

/**
 * The entry as QEMU rewrites it: the three known extra fields always present
 * (disk size defaulting to the current size, icount to -1), unknown extra data
 * kept after them, the 32-bit VM state size zero when it does not fit.
 */
function normalised(sn: Qcow2Snapshot, diskSize: number): Qcow2Snapshot {
  const vmState = sn.vmStateSizeLarge ?? BigInt(sn.vmStateSize);
  const unknown = sn.extraData.length > KNOWN_EXTRA ? sn.extraData.subarray(KNOWN_EXTRA) : new Uint8Array(0);
  const extra = new Uint8Array(KNOWN_EXTRA + unknown.length);
  const v = new DataView(extra.buffer);
  v.setBigUint64(0, vmState, false);
  v.setBigUint64(8, sn.diskSize ?? BigInt(diskSize), false);
  v.setBigInt64(16, sn.icount ?? -1n, false);
  extra.set(unknown, KNOWN_EXTRA);
  return {
    ...sn,
    vmStateSize: vmState <= 0xffffffffn ? Number(vmState) : 0,
    vmStateSizeLarge: vmState,
    diskSize: sn.diskSize ?? BigInt(diskSize),
    icount: sn.icount ?? -1n,
    extraData: extra,
  };
}

/** find_snapshot_by_id_and_name: both given must match; -1 when none. */
export function findSnapshot(list: readonly Qcow2Snapshot[], target: { readonly id?: string; readonly name?: string }): number {
  if (target.id === undefined && target.name === undefined) return -1;
  return list.findIndex((sn) => (target.id === undefined || sn.id === target.id) && (target.name === undefined || sn.name === target.name));
}

/** The next free id: one more than the largest numeric id (strtoul semantics: leading digits). */
export function nextSnapshotId(list: readonly Qcow2Snapshot[]): string {
  let max = 0;
  for (const sn of list) {
    const m = /^\s*\+?(\d+)/.exec(sn.id);
    const n = m ? Number(m[1]) : 0;
    if (Number.isSafeInteger(n) && n > max) max = n;
  }
  return String(max + 1);
}

export class Qcow2SnapshotOps implements SnapshotOps {
  readonly #ctx: Qcow2MetaContext;

  constructor(ctx: Qcow2MetaContext) {
    this.#ctx = ctx;
  }

  async list(): Promise<SnapshotInfo[]> {
    return (await loadSnapshots(this.#ctx)).snapshots.map(describeSnapshot);
  }

  async create(options: SnapshotCreateOptions): Promise<SnapshotInfo> {
    const ctx = this.#ctx;
    const { img } = ctx;
    await this.#prepare('create');
    const loaded = await loadSnapshots(ctx);
    if (loaded.snapshots.length >= MAX_SNAPSHOTS) {
      throw new VdiskError('EFBIG', `'${img.file}': too many snapshots (at most ${MAX_SNAPSHOTS})`, { file: img.file, field: 'nb_snapshots' });
    }
    if (new TextEncoder().encode(options.name).length > MAX_NAME_BYTES) {
      throw new VdiskError('EINVAL', `'${img.file}': snapshot name is too long`, { file: img.file, field: 'name' });
    }
    const now = Date.now();
    const id = nextSnapshotId(loaded.snapshots);
    await img.l1Lock.run(async () => {
      const l1Bytes = img.l1.length;
      // The snapshot's L1 table: a copy of the active one in fresh clusters.
      const l1Offset = l1Bytes === 0 ? 0 : await img.refcounts.allocClusters(Math.ceil(l1Bytes / img.clusterSize));
      await img.refcounts.cache.flushWithDependencies();
      if (l1Bytes > 0) await img.host.write(img.l1.slice(), l1Offset);
      // Count the new references; the active tables lose COPIED where clusters are now shared.
      const l1 = img.l1.slice();
      await adjustTreeRefcounts(img, l1, { addend: 1, fixFlags: true });
      await ctx.flush();
      await this.#writeActiveL1(l1);
      const extra = new Uint8Array(KNOWN_EXTRA);
      const sn: Qcow2Snapshot = {
        l1TableOffset: l1Offset,
        l1Size: l1Bytes / 8,
        id,
        name: options.name,
        dateSec: options.dateSec ?? Math.floor(now / 1000),
        dateNsec: options.dateNsec ?? (now % 1000) * 1_000_000,
        vmClockNsec: BigInt(options.vmClockNsec ?? 0),
        vmStateSize: 0,
        vmStateSizeLarge: 0n,
        diskSize: BigInt(img.size),
        icount: 0n,
        extraData: extra,
      };
      await this.#writeTable([...loaded.snapshots, sn], loaded.size);
    });
    const created = (await loadSnapshots(ctx)).snapshots.find((s) => s.id === id);
    if (!created) throw new VdiskError('EIO', `'${img.file}': the new snapshot ${id} is missing from the table`, { file: img.file });
    return describeSnapshot(created);
  }

  async apply(idOrName: string): Promise<void> {
    const ctx = this.#ctx;
    const { img } = ctx;
    await this.#prepare('apply');
    // QEMU's bdrv_snapshot_goto: the bitmaps would no longer describe the disk.
    if (ctx.parsed().extensions.bitmaps !== null) throw new VdiskError('EBUSY', 'Device has active dirty bitmaps', { file: img.file, field: 'bitmaps' });
    const { snapshots } = await loadSnapshots(ctx);
    let index = findSnapshot(snapshots, { id: idOrName });
    if (index < 0) index = findSnapshot(snapshots, { name: idOrName });
    const sn = snapshots[index];
    if (!sn) throw new VdiskError('ENOENT', `'${img.file}': no snapshot with id or name '${idOrName}'`, { file: img.file });
    const snL1 = await this.#readSnapshotL1(sn);
    // The disk takes the snapshot's size first (qcow2_snapshot_goto): a shrink or a grow
    // of the active layer, whose mappings are replaced below anyway.
    if (sn.diskSize !== null && sn.diskSize !== BigInt(img.size)) {
      await ctx.resize(toSafeNumber(sn.diskSize, 'snapshot disk size', { file: img.file, field: 'disk_size' }));
    }
    await img.l1Lock.run(async () => {
      const active = img.l1.length / 8;
      const fresh = new Uint8Array(img.l1.length);
      fresh.set(snL1.subarray(0, Math.min(snL1.length, fresh.length)));
      for (let i = active; i < sn.l1Size; i++) {
        if (snL1.subarray(i * 8, i * 8 + 8).some((b) => b !== 0)) {
          throw new VdiskError('ENOTSUP', `'${img.file}': snapshot ${sn.id} maps more L1 entries than the active table holds`, { file: img.file });
        }
      }
      // Count the snapshot's tree again, then point the active L1 at it (COPIED
      // cleared: a safe state until the flags are rebuilt below).
      await adjustTreeRefcounts(img, fresh, { addend: 1, fixFlags: false });
      await img.refcounts.cache.flushWithDependencies();
      clearL1Copied(fresh);
      const old = img.l1.slice();
      await img.host.write(fresh, img.l1Offset);
      await img.host.sync();
      img.l1 = fresh;
      // The previous state's tree loses the active L1's references.
      await adjustTreeRefcounts(img, old, { addend: -1, fixFlags: false });
      await img.refcounts.cache.flushWithDependencies();
      await this.#rebuildActiveFlags();
    });
  }

  async delete(target: { readonly id?: string; readonly name?: string }): Promise<void> {
    const ctx = this.#ctx;
    const { img } = ctx;
    await this.#prepare('delete');
    const loaded = await loadSnapshots(ctx);
    const index = findSnapshot(loaded.snapshots, target);
    const sn = loaded.snapshots[index];
    if (!sn) throw new VdiskError('ENOENT', "Can't find the snapshot", { file: img.file });
    const snL1 = await this.#readSnapshotL1(sn);
    await img.l1Lock.run(async () => {
      await this.#writeTable(
        loaded.snapshots.filter((_, i) => i !== index),
        loaded.size,
      );
      await adjustTreeRefcounts(img, snL1, { addend: -1, fixFlags: false });
      if (sn.l1Size > 0) await img.refcounts.free(sn.l1TableOffset, sn.l1Size * 8);
      await img.refcounts.cache.flushWithDependencies();
      await this.#rebuildActiveFlags();
    });
  }

  async #prepare(what: string): Promise<void> {
    const ctx = this.#ctx;
    await ctx.beginChange();
    if (ctx.img.geometry.externalDataFile) {
      throw new VdiskError('ENOTSUP', `'${ctx.img.file}': cannot ${what} internal snapshots of an image with an external data file`, { file: ctx.img.file });
    }
    await ctx.flush();
  }

  async #readSnapshotL1(sn: Qcow2Snapshot): Promise<Uint8Array> {
    const { img } = this.#ctx;
    const bytes = sn.l1Size * 8;
    const fileSize = await img.host.size();
    if (bytes > MAX_L1_BYTES) {
      throw new VdiskError('ECORRUPT', `'${img.file}': snapshot ${sn.id} L1 table is too large (${hex(sn.l1Size)} entries)`, { file: img.file, field: 'l1_size' });
    }
    if (bytes > 0 && (sn.l1TableOffset % img.clusterSize !== 0 || sn.l1TableOffset + bytes > fileSize)) {
      throw new VdiskError('ECORRUPT', `'${img.file}': snapshot ${sn.id} L1 table at ${hex(sn.l1TableOffset)} is misaligned or past the end of the file`, {
        file: img.file,
        offset: sn.l1TableOffset,
        field: 'l1_table_offset',
      });
    }
    const buf = new Uint8Array(bytes);
    if (bytes > 0) await img.host.read(buf, sn.l1TableOffset);
    return buf;
  }

  /** Sets COPIED in the active L1/L2 tables exactly where the refcount is 1 (call under l1Lock). */
  async #rebuildActiveFlags(): Promise<void> {
    const { img } = this.#ctx;
    const l1 = img.l1.slice();
    await adjustTreeRefcounts(img, l1, { addend: 0, fixFlags: true });
    await this.#ctx.flush();
    await this.#writeActiveL1(l1);
  }

  async #writeActiveL1(l1: Uint8Array): Promise<void> {
    const { img } = this.#ctx;
    if (l1.length > 0 && !l1.every((b, i) => b === img.l1[i])) {
      await img.host.write(l1, img.l1Offset);
      await img.host.sync();
    }
    img.l1 = l1;
  }

  /**
   * qcow2_write_snapshots: the whole table to fresh clusters, the header's
   * nb_snapshots and snapshots_offset switched in one write, the old table freed.
   */
  async #writeTable(list: readonly Qcow2Snapshot[], oldSize: number): Promise<void> {
    const ctx = this.#ctx;
    const { img } = ctx;
    const parsed = ctx.parsed();
    const entries = list.map((sn) => normalised(sn, img.size));
    const padded = serializeSnapshotTable(entries);
    // QEMU's table size does not include the last entry's padding.
    const last = entries[entries.length - 1];
    const lastLength = last ? 40 + last.extraData.length + new TextEncoder().encode(last.id).length + new TextEncoder().encode(last.name).length : 0;
    const bytes = padded.subarray(0, padded.length - (Math.ceil(lastLength / 8) * 8 - lastLength));
    if (bytes.length > MAX_SNAPSHOT_TABLE_BYTES) {
      throw new VdiskError('EFBIG', `'${img.file}': the snapshot table would exceed ${MAX_SNAPSHOT_TABLE_BYTES} bytes`, { file: img.file, field: 'snapshots_offset' });
    }
    let offset = 0;
    if (list.length > 0) {
      offset = await img.refcounts.allocClusters(Math.ceil(bytes.length / img.clusterSize));
      await img.refcounts.cache.flushWithDependencies();
      await img.host.write(bytes, offset);
      await img.host.sync();
    }
    const hdr = new Uint8Array(12);
    const v = new DataView(hdr.buffer);
    v.setUint32(0, list.length, false);
    v.setBigUint64(4, BigInt(offset), false);
    await img.host.write(hdr, HEADER_NB_SNAPSHOTS);
    await img.host.sync();
    const old = parsed.header;
    ctx.setParsed({ ...parsed, header: { ...old, nbSnapshots: list.length, snapshotsOffset: offset } });
    if (old.nbSnapshots > 0 && oldSize > 0) await img.refcounts.free(old.snapshotsOffset, oldSize);
    await img.refcounts.cache.flushWithDependencies();
  }
}
