/**
 * qcow2 consistency check and repair, as `qemu-img check` does it
 * (block/qcow2-refcount.c qcow2_check_refcounts): count every reference to
 * every host cluster (header, L1/L2 of the active state and of each snapshot,
 * data and compressed ranges, snapshot table, refcount table and blocks,
 * encryption header, bitmaps), compare with the stored refcounts, then check
 * the COPIED flags. Messages use qemu-img's wording.
 *
 * Repair order (crash safety): refcount increases are written before COPIED
 * flags are changed; a rebuilt refcount structure is written and synced in
 * full before the header is switched to it.
 */
import { isVdiskError, VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import type { HostFile } from '../../host/host-file.js';
import type { CheckReport, RepairMode } from '../driver.js';
import {
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  MAX_REFCOUNT_TABLE_BYTES,
  clusterSizeOf,
  hasDataFile,
  hasExtendedL2,
  serializeHeaderCluster,
  withHeader,
  type ParsedHeaderCluster,
} from './header.js';
import { decodeL2Words, type L2Geometry } from './l2-entry.js';
import { getRefcount, refcountBlockEntries, setRefcount } from './refcount-block.js';
import { parseSnapshotTable, snapshotL1Problem, MAX_SNAPSHOT_TABLE_BYTES } from './snapshot-table.js';
import { decodeBitmapTableEntry, parseBitmapDirectory } from './bitmaps.js';
import { refcountMetadataBlocks } from './create.js';

export interface CheckQcow2Options {
  readonly host: HostFile;
  readonly file: string;
  readonly parsed: ParsedHeaderCluster;
  readonly repair: RepairMode;
  /** Reads an L2 table (one cluster); lets the driver serve tables from its cache. */
  readonly readL2?: (offset: number) => Promise<Uint8Array>;
}

/** The report plus the header as it is after repair (the refcount table may have moved). */
export interface Qcow2CheckResult extends CheckReport {
  readonly parsed: ParsedHeaderCluster;
}

const L1_OFFSET_MASK = 0x00fffffffffffe00n;
const REFT_OFFSET_MASK = 0xfffffffffffffe00n;
const REFT_RESERVED_MASK = 0x1ffn;
const COPIED = 1n << 63n;
const TWO32 = 0x1_0000_0000;

interface Counts {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
  allocated: number;
  fragmented: number;
  compressed: number;
  messages: string[];
}

function freshCounts(messages: string[]): Counts {
  return { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, allocated: 0, fragmented: 0, compressed: 0, messages };
}

/** The computed refcount of every host cluster. */
class ReferenceCounter {
  refs: Uint32Array;
  constructor(
    private readonly cs: number,
    private readonly fileSize: number,
    private readonly max: number,
  ) {
    this.refs = new Uint32Array(Math.ceil(fileSize / cs));
  }

  get clusters(): number {
    return this.refs.length;
  }

  /** inc_refcounts: counts a reference to every cluster of [offset, offset+size). */
  inc(c: Counts, offset: number, size: number): void {
    if (size <= 0) return;
    if (offset + size - this.fileSize >= this.cs) {
      c.messages.push(`ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset ${hex(offset)} size ${hex(size)}`);
      c.corruptions++;
      return;
    }
    const first = Math.floor(offset / this.cs);
    const last = Math.floor((offset + size - 1) / this.cs);
    if (last >= this.refs.length) {
      const grown = new Uint32Array(last + 1);
      grown.set(this.refs);
      this.refs = grown;
    }
    for (let k = first; k <= last; k++) {
      const r = this.refs[k] ?? 0;
      if (r >= this.max) {
        c.messages.push(`ERROR: overflow cluster offset=${hex(k * this.cs)}`);
        c.messages.push(
          'Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing',
        );
        c.corruptions++;
        continue;
      }
      this.refs[k] = r + 1;
    }
  }

  get(k: number): number {
    return this.refs[k] ?? 0;
  }
}

/** The refcounts stored in the image, read block by block. */
class StoredRefcounts {
  table: bigint[] = [];
  private readonly blocks = new Map<number, Uint8Array>();
  readonly rbEntries: number;

  constructor(
    private readonly o: CheckQcow2Options,
    private readonly cs: number,
    readonly order: number,
  ) {
    this.rbEntries = refcountBlockEntries(cs, order);
  }

  async load(offset: number, clusters: number): Promise<void> {
    const buf = new Uint8Array(clusters * this.cs);
    await this.o.host.read(buf, offset);
    const v = new DataView(buf.buffer);
    this.table = [];
    for (let i = 0; i < buf.length / 8; i++) this.table.push(v.getBigUint64(i * 8, false));
    this.blocks.clear();
  }

  /** The refcount block covering table index `ti`: null when unallocated, 'error' when unusable. */
  async block(ti: number): Promise<Uint8Array | null | 'error'> {
    if (ti >= this.table.length) return null;
    const entry = (this.table[ti] ?? 0n) & REFT_OFFSET_MASK;
    if (entry === 0n) return null;
    const off = Number(entry);
    if (off % this.cs !== 0 || off > Number.MAX_SAFE_INTEGER) return 'error';
    let b = this.blocks.get(off);
    if (b === undefined) {
      b = new Uint8Array(this.cs);
      await this.o.host.read(b, off);
      if (this.blocks.size >= 64) this.blocks.clear();
      this.blocks.set(off, b);
    }
    return b;
  }

  async get(ci: number): Promise<number | 'error'> {
    const b = await this.block(Math.floor(ci / this.rbEntries));
    if (b === null) return 0;
    if (b === 'error') return 'error';
    return getRefcount(b, ci % this.rbEntries, this.order);
  }

  /** Sets a stored refcount in place (the block must exist) and writes the block back. */
  async set(ci: number, value: number): Promise<boolean> {
    const ti = Math.floor(ci / this.rbEntries);
    const b = await this.block(ti);
    if (b === null || b === 'error') return false;
    setRefcount(b, ci % this.rbEntries, this.order, value);
    await this.o.host.write(b, Number((this.table[ti] ?? 0n) & REFT_OFFSET_MASK));
    return true;
  }
}

/**
 * Checks (and with `repair`, repairs) a qcow2 image.
 *
 * @example
 * const report = await checkQcow2({ host, file: 'a.qcow2', parsed, repair: 'none' });
 * report.leaks; // clusters whose stored refcount is too high
 */
export async function checkQcow2(o: CheckQcow2Options): Promise<Qcow2CheckResult> {
  let parsed = o.parsed;
  const h = parsed.header;
  const cs = clusterSizeOf(h);
  const messages: string[] = [];
  let c = freshCounts(messages);
  const fixLeaks = o.repair !== 'none';
  const fixErrors = o.repair === 'all';
  const stored = new StoredRefcounts(o, cs, h.refcountOrder);
  await stored.load(h.refcountTableOffset, h.refcountTableClusters);

  let calc = await calculateRefcounts(o, parsed, stored, c);
  let rebuild = calc.rebuild;
  const preCompare: Counts = { ...c, messages: [] };
  let highest = await compareRefcounts({ o, stored, calc: calc.counter, c, fixLeaks: false, fixErrors: false, onRebuild: () => (rebuild = true) });

  if (rebuild && fixErrors) {
    const old = { corruptions: c.corruptions, leaks: c.leaks };
    messages.push('Rebuilding refcount structure');
    parsed = await rebuildRefcountStructure(o, parsed, calc.counter, stored);
    const after = freshCounts(messages);
    after.corruptionsFixed = c.corruptionsFixed;
    after.leaksFixed = c.leaksFixed;
    after.checkErrors = c.checkErrors;
    calc = await calculateRefcounts(o, parsed, stored, after);
    highest = await compareRefcounts({ o, stored, calc: calc.counter, c: after, fixLeaks: true, fixErrors: false, onRebuild: () => undefined });
    if (after.corruptions < old.corruptions) after.corruptionsFixed += old.corruptions - after.corruptions;
    if (after.leaks < old.leaks) after.leaksFixed += old.leaks - after.leaks;
    c = after;
  } else if (fixLeaks) {
    if (rebuild) {
      messages.push('ERROR need to rebuild refcount structures');
      c.checkErrors++;
      return finish(c, parsed, highest, cs);
    }
    if (c.leaks > 0 || c.corruptions > 0) {
      c = { ...preCompare, messages };
      highest = await compareRefcounts({ o, stored, calc: calc.counter, c, fixLeaks, fixErrors, onRebuild: () => undefined });
    }
  }

  await checkCopiedFlags(o, parsed, stored, c);

  if (fixLeaks && c.checkErrors === 0 && c.corruptions === 0) parsed = await markClean(o, parsed);
  return finish(c, parsed, highest, cs);
}

function finish(c: Counts, parsed: ParsedHeaderCluster, highest: number, cs: number): Qcow2CheckResult {
  const h = parsed.header;
  return {
    corruptions: c.corruptions,
    leaks: c.leaks,
    checkErrors: c.checkErrors,
    corruptionsFixed: c.corruptionsFixed,
    leaksFixed: c.leaksFixed,
    imageEndOffset: (highest + 1) * cs,
    totalClusters: Math.ceil(h.size / cs),
    allocatedClusters: c.allocated,
    fragmentedClusters: c.fragmented,
    compressedClusters: c.compressed,
    messages: c.messages,
    parsed,
  };
}

/** After a successful repair QEMU clears the dirty and corrupt bits (rewriting cluster 0). */
async function markClean(o: CheckQcow2Options, parsed: ParsedHeaderCluster): Promise<ParsedHeaderCluster> {
  const bits = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
  if ((parsed.header.incompatibleFeatures & bits) === 0n) return parsed;
  await o.host.sync();
  const next = withHeader(parsed, { incompatibleFeatures: parsed.header.incompatibleFeatures & ~bits });
  await o.host.write(serializeHeaderCluster(next, clusterSizeOf(next.header)), 0);
  await o.host.sync();
  return next;
}

interface Calculated {
  counter: ReferenceCounter;
  rebuild: boolean;
}

async function readAt(o: CheckQcow2Options, offset: number, length: number): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  await o.host.read(buf, offset);
  return buf;
}

/** calculate_refcounts: every reference the metadata makes. */
async function calculateRefcounts(o: CheckQcow2Options, parsed: ParsedHeaderCluster, stored: StoredRefcounts, c: Counts): Promise<Calculated> {
  const h = parsed.header;
  const cs = clusterSizeOf(h);
  const fileSize = await o.host.size();
  const max = Math.min(2 ** 2 ** h.refcountOrder - 1, 0xffffffff);
  const counter = new ReferenceCounter(cs, fileSize, max);
  const geometry: L2Geometry = { clusterBits: h.clusterBits, extendedL2: hasExtendedL2(h), externalDataFile: hasDataFile(h) };
  counter.inc(c, 0, cs);
  await checkL1(o, { counter, c, geometry, l1Offset: h.l1TableOffset, l1Size: h.l1Size, active: true });

  if (h.nbSnapshots > 0) {
    if (hasDataFile(h)) {
      c.messages.push(`ERROR ${h.nbSnapshots} snapshots in image with data file`);
      c.corruptions++;
    }
    try {
      const buf = await readAt(o, h.snapshotsOffset, Math.min(MAX_SNAPSHOT_TABLE_BYTES, Math.max(0, fileSize - h.snapshotsOffset)));
      const table = parseSnapshotTable(buf, { file: o.file, fileSize, offset: h.snapshotsOffset, count: h.nbSnapshots });
      for (const sn of table.snapshots) {
        const problem = snapshotL1Problem(sn, { clusterSize: cs, fileSize: fileSize + cs });
        if (problem !== null) {
          c.messages.push(problem);
          c.corruptions++;
          continue;
        }
        await checkL1(o, { counter, c, geometry, l1Offset: sn.l1TableOffset, l1Size: sn.l1Size, active: false });
      }
      counter.inc(c, h.snapshotsOffset, table.size);
    } catch (e) {
      if (!isVdiskError(e)) throw e;
      c.messages.push(`ERROR: ${e.message}`);
      c.checkErrors++;
    }
  }
  counter.inc(c, h.refcountTableOffset, h.refcountTableClusters * cs);
  const crypto = parsed.extensions.cryptoHeader;
  if (crypto !== null && crypto.length > 0) counter.inc(c, crypto.offset, crypto.length);
  await countBitmaps(o, { parsed, counter, c, fileSize });

  // check_refblocks: the refcount blocks themselves.
  let rebuild = false;
  stored.table.forEach((entry, i) => {
    const off = entry & REFT_OFFSET_MASK;
    if ((entry & REFT_RESERVED_MASK) !== 0n) {
      c.messages.push(`ERROR refcount table entry ${i} has reserved bits set`);
      c.corruptions++;
      rebuild = true;
      return;
    }
    if (off % BigInt(cs) !== 0n) {
      c.messages.push(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      c.corruptions++;
      rebuild = true;
      return;
    }
    if (off === 0n) return;
    if (off >= BigInt(counter.clusters) * BigInt(cs)) {
      c.messages.push(`ERROR refcount block ${i} is outside image`);
      c.corruptions++;
      rebuild = true;
      return;
    }
    const offset = Number(off);
    counter.inc(c, offset, cs);
    const r = counter.get(offset / cs);
    if (r !== 1) {
      c.messages.push(`ERROR refcount block ${i} refcount=${r}`);
      c.corruptions++;
      rebuild = true;
    }
  });
  return { counter, rebuild };
}

interface WalkContext {
  readonly counter: ReferenceCounter;
  readonly c: Counts;
  readonly geometry: L2Geometry;
}

/** check_refcounts_l1: the L1 table, its L2 tables and what they map. */
async function checkL1(o: CheckQcow2Options, w: WalkContext & { l1Offset: number; l1Size: number; active: boolean }): Promise<void> {
  if (w.l1Size === 0) return;
  const cs = 2 ** w.geometry.clusterBits;
  w.counter.inc(w.c, w.l1Offset, w.l1Size * 8);
  const l1 = await readAt(o, w.l1Offset, w.l1Size * 8);
  const v = new DataView(l1.buffer);
  for (let i = 0; i < w.l1Size; i++) {
    const entry = v.getBigUint64(i * 8, false);
    if (entry === 0n) continue;
    const l2Offset = entry & L1_OFFSET_MASK;
    if (l2Offset === 0n) continue;
    const off = Number(l2Offset);
    w.counter.inc(w.c, off, cs);
    if (off % cs !== 0) {
      w.c.messages.push(`ERROR l2_offset=${off.toString(16)}: Table is not cluster aligned; L1 entry corrupted`);
      w.c.corruptions++;
      continue;
    }
    const table = o.readL2 !== undefined && w.active ? await o.readL2(off) : await readAt(o, off, cs);
    checkL2(table, w, { l2Offset: off, active: w.active, file: o.file });
  }
}

/** check_refcounts_l2 for one table. */
function checkL2(table: Uint8Array, w: WalkContext, at: { l2Offset: number; active: boolean; file: string }): void {
  const g = w.geometry;
  const cs = 2 ** g.clusterBits;
  const entrySize = g.extendedL2 ? 16 : 8;
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  let nextContiguous = 0;
  for (let i = 0; i < cs / entrySize; i++) {
    const pos = i * entrySize;
    let hi = v.getUint32(pos, false);
    const lo = v.getUint32(pos + 4, false);
    if ((hi & 0xc0000000) === 0xc0000000) {
      const hiBits = 70 - g.clusterBits - 32;
      const coffset = (hi & ((1 << hiBits) - 1)) * TWO32 + (lo >>> 0);
      w.c.messages.push(`ERROR: coffset=${hex(coffset)}: copied flag must never be set for compressed clusters`);
      w.c.corruptions++;
      hi &= 0x7fffffff;
    }
    const bitmapHi = g.extendedL2 ? v.getUint32(pos + 8, false) : 0;
    const bitmapLo = g.extendedL2 ? v.getUint32(pos + 12, false) : 0;
    if ((hi | lo | bitmapHi | bitmapLo) === 0) continue;
    const raw = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
    let mapping;
    try {
      mapping = decodeL2Words({ hi, lo, bitmapHi, bitmapLo }, g, { file: at.file, tableOffset: at.l2Offset, index: i });
    } catch (e) {
      if (!isVdiskError(e)) throw e;
      w.c.messages.push(`ERROR found invalid l2 entry ${raw.toString(16)} in L2 table at ${hex(at.l2Offset)} index ${i}: ${e.message}`);
      w.c.corruptions++;
      // A misaligned or flagged entry may still pin its cluster: count what QEMU would.
      continue;
    }
    switch (mapping.kind) {
      case 'compressed': {
        const start = mapping.hostOffset - (mapping.hostOffset % 512);
        w.counter.inc(w.c, start, mapping.sectors * 512);
        if (at.active) {
          w.c.allocated++;
          w.c.compressed++;
          w.c.fragmented++;
        }
        break;
      }
      case 'normal':
      case 'zero-alloc':
      case 'subclusters': {
        const host = mapping.hostOffset;
        if (host === null) break;
        if (at.active) {
          w.c.allocated++;
          if (nextContiguous !== 0 && host !== nextContiguous) w.c.fragmented++;
          nextContiguous = host + cs;
        }
        if (!g.externalDataFile) w.counter.inc(w.c, host, cs);
        break;
      }
      default:
        break;
    }
  }
}

/** qcow2_check_bitmaps_refcounts: the directory, each bitmap table and its data clusters. */
async function countBitmaps(o: CheckQcow2Options, b: { parsed: ParsedHeaderCluster; counter: ReferenceCounter; c: Counts; fileSize: number }): Promise<void> {
  const ext = b.parsed.extensions.bitmaps;
  if (ext === null) return;
  const cs = clusterSizeOf(b.parsed.header);
  b.counter.inc(b.c, ext.directoryOffset, ext.directorySize);
  let bitmaps;
  try {
    const dir = await readAt(o, ext.directoryOffset, ext.directorySize);
    bitmaps = parseBitmapDirectory(dir, { file: o.file, ext, clusterSize: cs, fileSize: b.fileSize });
  } catch (e) {
    if (!isVdiskError(e)) throw e;
    b.c.messages.push(`ERROR: ${e.message}`);
    b.c.corruptions++;
    return;
  }
  for (const bm of bitmaps) {
    b.counter.inc(b.c, bm.tableOffset, bm.tableSize * 8);
    const table = await readAt(o, bm.tableOffset, bm.tableSize * 8);
    const v = new DataView(table.buffer);
    for (let i = 0; i < bm.tableSize; i++) {
      const entry = decodeBitmapTableEntry(v.getBigUint64(i * 8, false), cs);
      if (entry.kind === 'invalid') {
        b.c.messages.push(`ERROR bitmap '${bm.name}' table entry ${i} is invalid (0x${entry.raw.toString(16)})`);
        b.c.corruptions++;
      } else if (entry.kind === 'data') {
        b.counter.inc(b.c, entry.offset, cs);
      }
    }
  }
}

/** compare_refcounts: stored against computed, repairing in place where allowed. Returns the highest cluster in use. */
async function compareRefcounts(a: {
  o: CheckQcow2Options;
  stored: StoredRefcounts;
  calc: ReferenceCounter;
  c: Counts;
  fixLeaks: boolean;
  fixErrors: boolean;
  onRebuild: () => void;
}): Promise<number> {
  const { stored, calc, c } = a;
  let highest = 0;
  const nb = calc.clusters;
  const per = stored.rbEntries;
  for (let ti = 0; ti * per < nb; ti++) {
    const block = await stored.block(ti);
    const end = Math.min(nb, (ti + 1) * per);
    for (let i = ti * per; i < end; i++) {
      if (block === 'error') {
        c.messages.push(`Can't get refcount for cluster ${i}: Input/output error`);
        c.checkErrors++;
        continue;
      }
      const r1 = block === null ? 0 : getRefcount(block, i % per, stored.order);
      const r2 = calc.get(i);
      if (r1 > 0 || r2 > 0) highest = i;
      if (r1 === r2) continue;
      let fixed: 'leaks' | 'corruptions' | null = null;
      if (r1 === 0) a.onRebuild();
      else if (r1 > r2 && a.fixLeaks) fixed = 'leaks';
      else if (r1 < r2 && a.fixErrors) fixed = 'corruptions';
      c.messages.push(`${fixed !== null ? 'Repairing' : r1 < r2 ? 'ERROR' : 'Leaked'} cluster ${i} refcount=${r1} reference=${r2}`);
      if (fixed !== null && (await stored.set(i, r2))) {
        if (fixed === 'leaks') c.leaksFixed++;
        else c.corruptionsFixed++;
        continue;
      }
      if (r1 < r2) c.corruptions++;
      else c.leaks++;
    }
  }
  if (a.fixLeaks || a.fixErrors) await a.o.host.sync();
  return highest;
}

/** check_oflag_copied: COPIED must be set exactly where the refcount is 1 (active tables only). */
async function checkCopiedFlags(o: CheckQcow2Options, parsed: ParsedHeaderCluster, stored: StoredRefcounts, c: Counts): Promise<void> {
  const h = parsed.header;
  const cs = clusterSizeOf(h);
  const repair = o.repair === 'all' ? true : o.repair === 'leaks' ? c.checkErrors === 0 && c.corruptions === 0 && c.leaks === 0 : false;
  if (h.l1Size === 0) return;
  const l1 = await readAt(o, h.l1TableOffset, h.l1Size * 8);
  const v = new DataView(l1.buffer);
  const extended = hasExtendedL2(h);
  const dataFile = hasDataFile(h);
  const entrySize = extended ? 16 : 8;
  for (let i = 0; i < h.l1Size; i++) {
    const l1Entry = v.getBigUint64(i * 8, false);
    const l2Offset = Number(l1Entry & L1_OFFSET_MASK);
    if (l2Offset === 0) continue;
    const r = await stored.get(l2Offset / cs);
    if (r === 'error') continue;
    if ((r === 1) !== ((l1Entry & COPIED) !== 0n)) {
      c.corruptions++;
      c.messages.push(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${l1Entry.toString(16)} refcount=${r}`);
      if (repair) {
        const fixed = r === 1 ? l1Entry | COPIED : l1Entry & ~COPIED;
        v.setBigUint64(i * 8, fixed, false);
        await o.host.write(l1.subarray(i * 8, i * 8 + 8), h.l1TableOffset + i * 8);
        c.corruptions--;
        c.corruptionsFixed++;
      }
    }
    if (l2Offset % cs !== 0) continue;
    const table = await readAt(o, l2Offset, cs);
    const tv = new DataView(table.buffer);
    let dirty = 0;
    for (let j = 0; j < cs / entrySize; j++) {
      const hi = tv.getUint32(j * entrySize, false);
      const lo = tv.getUint32(j * entrySize + 4, false);
      if ((hi & 0x40000000) !== 0) continue; // compressed
      const offset = (hi & 0x00ffffff) * TWO32 + ((lo & 0xfffffe00) >>> 0);
      const copied = (hi & 0x80000000) !== 0;
      const hasHost = offset !== 0 || (dataFile && copied);
      // Standard clusters: NORMAL or ZERO_ALLOC (zero flag only counts without extended L2).
      if (!hasHost) continue;
      let refcount: number;
      if (dataFile) refcount = 1;
      else {
        const got = await stored.get(offset / cs);
        if (got === 'error') continue;
        refcount = got;
      }
      if ((refcount === 1) !== copied) {
        const entry = (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
        c.corruptions++;
        c.messages.push(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${entry.toString(16)} refcount=${refcount}`);
        if (repair) {
          tv.setUint32(j * entrySize, refcount === 1 ? (hi | 0x80000000) >>> 0 : hi & 0x7fffffff, false);
          dirty++;
        }
      }
    }
    if (dirty > 0) {
      await o.host.write(table, l2Offset);
      c.corruptions -= dirty;
      c.corruptionsFixed += dirty;
    }
  }
  if (repair) await o.host.sync();
}

/**
 * Writes a fresh refcount structure (blocks, then table) after the last used
 * cluster, from the computed references, and switches the header to it. The old
 * refcount table and blocks are left unreferenced (free).
 */
async function rebuildRefcountStructure(
  o: CheckQcow2Options,
  parsed: ParsedHeaderCluster,
  calc: ReferenceCounter,
  stored: StoredRefcounts,
): Promise<ParsedHeaderCluster> {
  const h = parsed.header;
  const cs = clusterSizeOf(h);
  const order = h.refcountOrder;
  const refs = calc.refs.slice();
  // The old structures stop being metadata once the header points elsewhere.
  const drop = (offset: number, bytes: number): void => {
    for (let k = Math.floor(offset / cs); k <= Math.floor((offset + bytes - 1) / cs) && k < refs.length; k++) if ((refs[k] ?? 0) > 0) refs[k] = (refs[k] ?? 1) - 1;
  };
  drop(h.refcountTableOffset, h.refcountTableClusters * cs);
  for (const entry of stored.table) {
    const off = entry & REFT_OFFSET_MASK;
    if (off !== 0n && (entry & REFT_RESERVED_MASK) === 0n && off % BigInt(cs) === 0n && off < BigInt(refs.length) * BigInt(cs)) drop(Number(off), cs);
  }
  let used = refs.length;
  while (used > 0 && (refs[used - 1] ?? 0) === 0) used--;
  const fileClusters = Math.ceil((await o.host.size()) / cs);
  const start = Math.max(used, fileClusters);
  const rbEntries = refcountBlockEntries(cs, order);
  const blocks = refcountMetadataBlocks(start, { clusterSize: cs, refcountOrder: order, generous: false });
  const tableClusters = Math.max(1, Math.ceil(blocks / (cs / 8)));
  if (tableClusters * cs > MAX_REFCOUNT_TABLE_BYTES) {
    throw new VdiskError('EFBIG', `Cannot rebuild the refcount structure of '${o.file}': the refcount table would need ${hex(tableClusters * cs)} bytes`, {
      file: o.file,
      field: 'refcount_table_clusters',
    });
  }
  const total = start + blocks + tableClusters;
  const all = new Uint32Array(Math.max(total, refs.length));
  all.set(refs);
  for (let k = start; k < total; k++) all[k] = 1;
  const table = new Uint8Array(tableClusters * cs);
  const tv = new DataView(table.buffer);
  for (let b = 0; b < blocks; b++) {
    const block = new Uint8Array(cs);
    for (let i = 0; i < rbEntries; i++) {
      const k = b * rbEntries + i;
      if (k >= all.length) break;
      const r = all[k] ?? 0;
      if (r > 0) setRefcount(block, i, order, Math.min(r, 2 ** 2 ** order - 1));
    }
    const at = (start + b) * cs;
    await o.host.write(block, at);
    tv.setBigUint64(b * 8, BigInt(at), false);
  }
  const tableOffset = (start + blocks) * cs;
  await o.host.write(table, tableOffset);
  await o.host.sync();
  const fields = new Uint8Array(12);
  const fv = new DataView(fields.buffer);
  fv.setBigUint64(0, BigInt(tableOffset), false);
  fv.setUint32(8, tableClusters, false);
  await o.host.write(fields, 48);
  await o.host.sync();
  const next = withHeader(parsed, { refcountTableOffset: tableOffset, refcountTableClusters: tableClusters });
  await stored.load(tableOffset, tableClusters);
  return next;
}
