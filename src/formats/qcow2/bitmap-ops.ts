/**
 * Persistent dirty bitmaps of a qcow2 image, as `qemu-img bitmap` changes
 * them: add, remove, clear, enable, disable, merge.
 *
 * Every change writes the bitmap directory to fresh clusters and switches the
 * header's bitmaps extension to it in one cluster-0 write (autoclear bit 0
 * set: the bitmaps are consistent); the old directory and any dropped tables
 * and data clusters are freed afterwards. A crash leaves leaks at worst.
 *
 * Guest writes are tracked as QEMU tracks them: before the first change of
 * guest data (or of the disk size) the driver calls track(), which loads every
 * consistent bitmap's bits into memory and marks the bitmaps in use on disk;
 * each write, zero and discard then sets the bits of the enabled ones; close
 * calls saveTracked(), which writes the changed bits to fresh clusters and
 * clears the in-use flags. A crash in between leaves the bitmaps in use, which
 * QEMU (and vdisk) then treat as inconsistent. Bitmaps already in use when
 * tracking starts are inconsistent: they are kept as they are.
 */
import { VdiskError } from '../../errors.js';
import type { BitmapInfo, BitmapMergeSource, BitmapOps } from '../driver.js';
import { markRange, resizeBits } from './bitmap-bits.js';
import { decodeBitmapTableEntry, parseBitmapDirectory, BITMAP_FLAG_AUTO, BITMAP_FLAG_IN_USE, type Qcow2Bitmap } from './bitmaps.js';
import { encodeName, MAX_BITMAPS } from './extensions.js';
import { AUTOCLEAR_BITMAPS, parseHeaderCluster, serializeHeaderCluster } from './header.js';
import type { Qcow2MetaContext } from './meta-context.js';

const ENTRY_FIXED = 24;
const MAX_NAME = 1023;

/** A consistent bitmap whose bits are kept in memory while guest writes are tracked. */
interface TrackedBitmap {
  readonly name: string;
  readonly granularity: number;
  readonly enabled: boolean;
  bits: Uint8Array;
  /** The bits differ from the ones stored. */
  changed: boolean;
}

function fail(message: string, code: 'EINVAL' | 'ENOENT' | 'ENOTSUP' = 'EINVAL'): VdiskError {
  return new VdiskError(code, message, { field: 'bitmap' });
}

function serializeDirectory(list: readonly Qcow2Bitmap[]): Uint8Array {
  const parts = list.map((b) => {
    const name = encodeName(b.name);
    const len = Math.ceil((ENTRY_FIXED + b.extraData.length + name.length) / 8) * 8;
    const out = new Uint8Array(len);
    const v = new DataView(out.buffer);
    v.setBigUint64(0, BigInt(b.tableOffset), false);
    v.setUint32(8, b.tableSize, false);
    v.setUint32(12, b.flags, false);
    out[16] = b.type;
    out[17] = b.granularityBits;
    v.setUint16(18, name.length, false);
    v.setUint32(20, b.extraData.length, false);
    out.set(b.extraData, ENTRY_FIXED);
    out.set(name, ENTRY_FIXED + b.extraData.length);
    return out;
  });
  const total = new Uint8Array(parts.reduce((n, x) => n + x.length, 0));
  let pos = 0;
  for (const x of parts) {
    total.set(x, pos);
    pos += x.length;
  }
  return total;
}

export class Qcow2BitmapOps implements BitmapOps {
  readonly #ctx: Qcow2MetaContext;
  /** The bitmaps tracked in memory (marked in use on disk); null when not tracking. */
  #tracked: TrackedBitmap[] | null = null;

  constructor(ctx: Qcow2MetaContext) {
    this.#ctx = ctx;
  }

  /** The directory as stored (empty when there is none or it is inconsistent). */
  async load(): Promise<Qcow2Bitmap[]> {
    const { img } = this.#ctx;
    const ext = this.#ctx.parsed().extensions.bitmaps;
    if (ext === null || (this.#ctx.parsed().header.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n) return [];
    const dir = new Uint8Array(ext.directorySize);
    await img.host.read(dir, ext.directoryOffset);
    return parseBitmapDirectory(dir, { file: img.file, ext, clusterSize: img.clusterSize, fileSize: await img.host.size() });
  }

  canStore(): boolean {
    return this.#ctx.parsed().header.version >= 3;
  }

  /** The bitmaps as this driver sees them: a tracked bitmap is consistent (in use only on disk). */
  async list(): Promise<BitmapInfo[]> {
    return (await this.load()).map((b) => {
      const inUse = (b.flags & BITMAP_FLAG_IN_USE) !== 0 && !this.#trackedBitmap(b.name);
      return {
        name: b.name,
        granularity: 2 ** b.granularityBits,
        flags: [...(inUse ? ['in-use'] : []), ...((b.flags & BITMAP_FLAG_AUTO) !== 0 ? ['auto'] : [])],
      };
    });
  }

  /**
   * Starts tracking guest writes (before the first change of guest data or
   * size): loads every consistent bitmap and marks all of them in use on disk.
   * Nothing happens without bitmaps, or when already tracking.
   */
  async track(): Promise<void> {
    if (this.#tracked !== null || this.#ctx.parsed().header.version < 3) return;
    const list = await this.load();
    const tracked: TrackedBitmap[] = [];
    for (const bm of list) {
      if ((bm.flags & BITMAP_FLAG_IN_USE) !== 0) continue;
      const { granularity, bits } = await this.#readStoredBits(bm);
      tracked.push({ name: bm.name, granularity, enabled: (bm.flags & BITMAP_FLAG_AUTO) !== 0, bits, changed: false });
    }
    if (tracked.length === 0) return;
    await this.#store(
      list.map((b) => ({ ...b, flags: b.flags | BITMAP_FLAG_IN_USE })),
      [],
    );
    this.#tracked = tracked;
  }

  /** Guest writes are being recorded (track() found bitmaps). */
  get tracking(): boolean {
    return this.#tracked !== null;
  }

  /** Marks guest bytes [offset, offset + length) dirty in every enabled tracked bitmap. */
  markDirty(offset: number, length: number): void {
    const tracked = this.#tracked;
    if (tracked === null) return;
    for (const t of tracked) if (t.enabled && markRange(t.bits, t.granularity, offset, length)) t.changed = true;
  }

  /**
   * Refuses a size change while a bitmap is inconsistent (QEMU cannot resize
   * it either); call with tracking started.
   */
  async assertResizable(): Promise<void> {
    for (const bm of await this.load()) {
      if ((bm.flags & BITMAP_FLAG_IN_USE) !== 0 && !this.#trackedBitmap(bm.name)) {
        throw fail(`Bitmap '${bm.name}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk`);
      }
    }
  }

  /** The tracked bitmaps follow a disk size change: granules past the old end are clean. */
  resized(newSize: number): void {
    for (const t of this.#tracked ?? []) {
      t.bits = resizeBits(t.bits, t.granularity, newSize);
      t.changed = true;
    }
  }

  /** Writes the tracked bitmaps back (changed bits to fresh clusters) with the in-use flags cleared; tracking ends. */
  async saveTracked(): Promise<void> {
    const tracked = this.#tracked;
    if (tracked === null) return;
    this.#tracked = null;
    const stored = await this.load();
    const next: Qcow2Bitmap[] = [];
    const dropped: Qcow2Bitmap[] = [];
    for (const bm of stored) {
      const t = tracked.find((x) => x.name === bm.name);
      if (!t) {
        next.push(bm);
        continue;
      }
      const flags = bm.flags & ~BITMAP_FLAG_IN_USE;
      if (!t.changed) {
        next.push({ ...bm, flags });
        continue;
      }
      const tableSize = this.#tableSize(t.granularity);
      next.push({ ...bm, flags, tableSize, tableOffset: await this.#writeData(t.bits, tableSize) });
      dropped.push(bm);
    }
    await this.#store(next, dropped);
  }

  /** Drops every bitmap and frees its clusters (a downgrade to compat=0.10, which has no bitmaps). */
  async removeAll(): Promise<void> {
    this.#tracked = null;
    const list = await this.load();
    if (list.length > 0) await this.#store([], list);
  }

  async add(name: string, options?: { readonly granularity?: number; readonly disabled?: boolean }): Promise<void> {
    await this.#change(() => this.#add(name, options));
  }

  async #add(name: string, options?: { readonly granularity?: number; readonly disabled?: boolean }): Promise<void> {
    const { img } = this.#ctx;
    const list = await this.load();
    if (list.some((b) => b.name === name)) throw fail(`Bitmap already exists: ${name}`);
    if (list.length >= MAX_BITMAPS) throw fail(`Too many bitmaps (at most ${MAX_BITMAPS})`, 'ENOTSUP');
    if (encodeName(name).length > MAX_NAME || name === '') throw fail(`Bitmap name is too long: ${name}`);
    const granularity = options?.granularity ?? Math.max(4096, img.clusterSize);
    if (!Number.isSafeInteger(granularity) || granularity < 512 || (granularity & (granularity - 1)) !== 0 || granularity > 2 ** 31) {
      throw fail('Granularity must be power of 2 and at least 512');
    }
    const tableSize = this.#tableSize(granularity);
    const tableOffset = await this.#allocZeroed(tableSize * 8);
    const bm: Qcow2Bitmap = {
      name,
      tableOffset,
      tableSize,
      flags: options?.disabled ? 0 : BITMAP_FLAG_AUTO,
      type: 1,
      granularityBits: Math.log2(granularity),
      extraData: new Uint8Array(0),
    };
    await this.#store([...list, bm], []);
  }

  async remove(name: string): Promise<void> {
    await this.#change(async () => {
      const list = await this.load();
      const bm = this.#find(list, name);
      await this.#store(
        list.filter((b) => b !== bm),
        [bm],
      );
    });
  }

  async clear(name: string): Promise<void> {
    await this.#change(async () => {
      const list = await this.load();
      const bm = this.#find(list, name);
      const fresh = { ...bm, tableOffset: await this.#allocZeroed(bm.tableSize * 8) };
      await this.#store(
        list.map((b) => (b === bm ? fresh : b)),
        [bm],
      );
    });
  }

  async enable(name: string): Promise<void> {
    await this.#setFlags(name, true);
  }

  async disable(name: string): Promise<void> {
    await this.#setFlags(name, false);
  }

  async readBits(name: string): Promise<{ readonly granularity: number; readonly bits: Uint8Array }> {
    const t = this.#trackedBitmap(name);
    if (t) return { granularity: t.granularity, bits: t.bits.slice() };
    return this.#readStoredBits(this.#find(await this.load(), name));
  }

  #trackedBitmap(name: string): TrackedBitmap | undefined {
    return this.#tracked?.find((t) => t.name === name);
  }

  /** The bits as stored in the bitmap's data clusters. */
  async #readStoredBits(bm: Qcow2Bitmap): Promise<{ readonly granularity: number; readonly bits: Uint8Array }> {
    const { img } = this.#ctx;
    const { name } = bm;
    const granularity = 2 ** bm.granularityBits;
    const nbits = Math.ceil(img.size / granularity);
    const bits = new Uint8Array(Math.ceil(nbits / 8));
    const table = await this.#readTable(bm);
    for (let i = 0; i < table.length; i++) {
      const e = decodeBitmapTableEntry(table[i] ?? 0n, img.clusterSize);
      const at = i * img.clusterSize;
      const n = Math.min(img.clusterSize, bits.length - at);
      if (n <= 0) break;
      if (e.kind === 'ones') bits.fill(0xff, at, at + n);
      else if (e.kind === 'data') await img.host.read(bits.subarray(at, at + n), e.offset);
      else if (e.kind === 'invalid') throw new VdiskError('ECORRUPT', `'${img.file}': bitmap '${name}' table entry ${i} is invalid`, { file: img.file, offset: bm.tableOffset + i * 8 });
    }
    return { granularity, bits };
  }

  async merge(target: string, source: BitmapMergeSource): Promise<void> {
    await this.#change(() => this.#merge(target, source));
  }

  async #merge(target: string, source: BitmapMergeSource): Promise<void> {
    const { img } = this.#ctx;
    const list = await this.load();
    const bm = this.#find(list, target);
    const from = source.image ? source.image.bitmaps : this;
    if (!from) throw fail(`Dirty bitmap '${source.name}' not found`, 'ENOENT');
    const src = await from.readBits(source.name);
    const dst = await this.readBits(target);
    const granularity = 2 ** bm.granularityBits;
    // Re-express the source at the target's granularity: a target bit is set when any source bit in its range is.
    for (let s = 0; s < src.bits.length * 8; s++) {
      if (((src.bits[s >> 3] ?? 0) & (1 << (s & 7))) !== 0) markRange(dst.bits, granularity, s * src.granularity, src.granularity);
    }
    // Unused bits past the end of the disk stay zero (qcow2.txt).
    const nbits = Math.ceil(img.size / granularity);
    for (let d = nbits; d < dst.bits.length * 8; d++) dst.bits[d >> 3] = (dst.bits[d >> 3] ?? 0) & ~(1 << (d & 7));
    const fresh = { ...bm, tableOffset: await this.#writeData(dst.bits, bm.tableSize) };
    await this.#store(
      list.map((b) => (b === bm ? fresh : b)),
      [bm],
    );
  }

  /**
   * Runs a change of the bitmaps on their stored state: tracked bits are
   * saved first, and tracking starts again afterwards (even when the change
   * failed) so that later writes are still recorded.
   */
  async #change(fn: () => Promise<void>): Promise<void> {
    const ctx = this.#ctx;
    await ctx.beginChange();
    if (ctx.parsed().header.version < 3) throw fail('Cannot store dirty bitmaps in qcow2 v2 files', 'ENOTSUP');
    await ctx.flush();
    const wasTracking = this.#tracked !== null;
    await this.saveTracked();
    try {
      await fn();
    } finally {
      if (wasTracking) await this.track();
    }
  }

  #find(list: readonly Qcow2Bitmap[], name: string): Qcow2Bitmap {
    const bm = list.find((b) => b.name === name);
    if (!bm) throw fail(`Dirty bitmap '${name}' not found`, 'ENOENT');
    return bm;
  }

  #tableSize(granularity: number): number {
    const { img } = this.#ctx;
    const bytes = Math.ceil(Math.ceil(img.size / granularity) / 8);
    return Math.ceil(bytes / img.clusterSize);
  }

  async #readTable(bm: Qcow2Bitmap): Promise<bigint[]> {
    const { img } = this.#ctx;
    const buf = new Uint8Array(bm.tableSize * 8);
    if (buf.length > 0) await img.host.read(buf, bm.tableOffset);
    const v = new DataView(buf.buffer);
    return Array.from({ length: bm.tableSize }, (_, i) => v.getBigUint64(i * 8, false));
  }

  /** Fresh clusters holding `bytes` zero bytes (a table of all-zero entries); 0 when empty. */
  async #allocZeroed(bytes: number): Promise<number> {
    const { img } = this.#ctx;
    if (bytes === 0) return 0;
    const offset = await img.refcounts.allocClusters(Math.ceil(bytes / img.clusterSize));
    await img.host.write(new Uint8Array(bytes), offset);
    return offset;
  }

  /** Writes the bits into fresh data clusters (all-zero clusters stay unallocated) and a fresh table. */
  async #writeData(bits: Uint8Array, tableSize: number): Promise<number> {
    const { img } = this.#ctx;
    const table = new Uint8Array(tableSize * 8);
    const tv = new DataView(table.buffer);
    for (let i = 0; i < tableSize; i++) {
      const chunk = bits.subarray(i * img.clusterSize, (i + 1) * img.clusterSize);
      if (chunk.every((b) => b === 0)) continue;
      const off = await img.refcounts.allocClusters(1);
      const data = new Uint8Array(img.clusterSize);
      data.set(chunk);
      await img.host.write(data, off);
      tv.setBigUint64(i * 8, BigInt(off), false);
    }
    const offset = await img.refcounts.allocClusters(Math.ceil(table.length / img.clusterSize));
    await img.host.write(table, offset);
    return offset;
  }

  /** Frees a dropped bitmap's data clusters and table. */
  async #freeBitmap(bm: Qcow2Bitmap): Promise<void> {
    const { img } = this.#ctx;
    for (const raw of await this.#readTable(bm)) {
      const e = decodeBitmapTableEntry(raw, img.clusterSize);
      if (e.kind === 'data') await img.refcounts.free(e.offset, img.clusterSize);
    }
    if (bm.tableSize > 0) await img.refcounts.free(bm.tableOffset, bm.tableSize * 8);
  }

  /** New directory → header switch → old directory and dropped bitmaps freed. */
  async #store(list: readonly Qcow2Bitmap[], dropped: readonly Qcow2Bitmap[]): Promise<void> {
    const ctx = this.#ctx;
    const { img } = ctx;
    const parsed = ctx.parsed();
    const oldExt = parsed.extensions.bitmaps;
    const dir = serializeDirectory(list);
    let dirOffset = 0;
    if (list.length > 0) {
      dirOffset = await img.refcounts.allocClusters(Math.ceil(dir.length / img.clusterSize));
      await img.host.write(dir, dirOffset);
    }
    await img.refcounts.cache.flushWithDependencies();
    const h = parsed.header;
    const next = {
      ...parsed,
      header: { ...h, autoclearFeatures: list.length > 0 ? h.autoclearFeatures | AUTOCLEAR_BITMAPS : h.autoclearFeatures & ~AUTOCLEAR_BITMAPS },
      extensions: { ...parsed.extensions, bitmaps: list.length > 0 ? { nbBitmaps: list.length, directorySize: dir.length, directoryOffset: dirOffset } : null },
    };
    const cluster0 = serializeHeaderCluster(next, img.clusterSize);
    await img.host.write(cluster0, 0);
    await img.host.sync();
    ctx.setParsed(parseHeaderCluster(cluster0, { file: img.file, fileSize: await img.host.size() }));
    if (oldExt !== null && (h.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n && oldExt.directorySize > 0) {
      await img.refcounts.free(oldExt.directoryOffset, oldExt.directorySize);
    }
    for (const bm of dropped) await this.#freeBitmap(bm);
    await img.refcounts.cache.flushWithDependencies();
  }

  async #setFlags(name: string, enabled: boolean): Promise<void> {
    await this.#change(async () => {
      const list = await this.load();
      const bm = this.#find(list, name);
      const flags = enabled ? bm.flags | BITMAP_FLAG_AUTO : bm.flags & ~BITMAP_FLAG_AUTO;
      await this.#store(
        list.map((b) => (b === bm ? { ...b, flags } : b)),
        [],
      );
    });
  }
}
