/**
 * Power-cut tests for ploop. A random workload (concurrent writes, zeroes,
 * discards; flushes between and during batches; the clean close) runs on an
 * image whose host file records every write and sync. Each cut replays a
 * prefix of that log: everything a completed sync covered, then the changes
 * after it, some dropped, the rest reordered and torn at 512-byte sectors.
 * For every cut:
 *  - header and BAT parse; no BAT entry points at a cluster whose bytes did not
 *    all reach the disk (the format's rule: index after data);
 *  - vdisk's check (qemu-img check -f parallels on a sample) finds no BAT
 *    problem; the only corruption allowed is the in-use marker;
 *  - a read-write open repairs the image (as QEMU does), every write completed
 *    before a flush reads back (or a later write of the same sector), and the
 *    repaired image checks clean.
 *
 * VDISK_CRASH_CUTS sets the cuts per scenario (default 300).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createPloop, PloopDriver } from '../../src/formats/ploop/index.js';
import { decodeHeader, INUSE_MAGIC, MAGIC_V1 } from '../../src/formats/ploop/header.js';
import { batEntryOffset, entryToHost, layoutOf } from '../../src/formats/ploop/layout.js';
import { FaultHostFile, type HostLogEntry } from '../../src/host/fault-file.js';
import type { HostFile, HostOpenOptions } from '../../src/host/host-file.js';
import { prng, tmpDir } from './image-helpers.js';
import { MemoryHostFile } from './memory-host.js';

const CUTS = Number(process.env['VDISK_CRASH_CUTS'] ?? 300);
const QEMU_SAMPLE = 6;
const SECTOR = 512;

interface Op {
  readonly id: number;
  readonly kind: 'write' | 'zero' | 'discard';
  readonly offset: number;
  readonly length: number;
  /** Log length when the op started: it cannot have reached a cut before that. */
  readonly startLog: number;
}

interface Flush {
  /** Ops completed before the flush started. */
  readonly coveredOps: number;
  /** Log length when the flush completed. */
  doneLog: number;
}

interface Scenario {
  readonly name: string;
  readonly size: number;
  readonly clusterSize: number;
  /** Rewrite the fresh image's magic to the v1 one (BAT entries in sectors). */
  readonly v1: boolean;
  readonly seed: number;
}

function sectorContent(id: number, sector: number): Uint8Array {
  const b = new Uint8Array(SECTOR);
  const v = new DataView(b.buffer);
  v.setUint32(0, id, true);
  v.setUint32(4, sector, true);
  for (let i = 8; i < SECTOR; i++) b[i] = (id * 13 + sector * 7 + i) & 0xff;
  return b;
}

const ZERO_SECTOR = Buffer.alloc(SECTOR);

/** Which op wrote guest sector `s` (0 = zeros), or -1 when it matches none. */
function decodeSector(disk: Buffer, s: number): number {
  const off = s * SECTOR;
  const id = disk.readUInt32LE(off);
  const sector = disk.readUInt32LE(off + 4);
  if (id === 0 && sector === 0) return disk.compare(ZERO_SECTOR, 0, SECTOR, off, off + SECTOR) === 0 ? 0 : -1;
  if (sector !== s) return -1;
  for (let i = 8; i < SECTOR; i += 7) if (disk[off + i] !== ((id * 13 + s * 7 + i) & 0xff)) return -1;
  return id;
}

async function freshImage(sc: Scenario): Promise<Uint8Array> {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'base.hds');
    await createPloop(file, { size: sc.size, options: { cluster_size: String(sc.clusterSize) } });
    const bytes = new Uint8Array(fs.readFileSync(file));
    if (sc.v1) bytes.set(Buffer.from(MAGIC_V1, 'latin1'), 0);
    return bytes;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function openOn(host: HostFile, options: { readOnly: boolean; noRepair?: boolean }): Promise<PloopDriver> {
  return PloopDriver.open(host.path, { ...options, openHost: async (_p: string, _o: HostOpenOptions) => host });
}

/** Runs the workload; returns the base image, the log, the ops and the flushes. */
async function runWorkload(sc: Scenario): Promise<{ base: Uint8Array; log: HostLogEntry[]; ops: Op[]; flushes: Flush[] }> {
  const base = await freshImage(sc);
  const fault = new FaultHostFile(new MemoryHostFile('img.hds', base));
  const d = await openOn(fault, { readOnly: false });
  const rand = prng(sc.seed);
  const ops: Op[] = [];
  const flushes: Flush[] = [];
  const sectors = sc.size / SECTOR;
  let seqEnd = SECTOR;
  const flush = async (coveredOps: number): Promise<void> => {
    const f: Flush = { coveredOps, doneLog: 0 };
    await d.flush();
    f.doneLog = fault.log.length;
    flushes.push(f);
  };
  try {
    for (let batch = 0; batch < 60; batch++) {
      const n = 1 + Math.floor(rand() * 8);
      const before = ops.length;
      const taken: Array<[number, number]> = [];
      const running: Promise<void>[] = [];
      for (let k = 0; k < n; k++) {
        const r = rand();
        const kind: Op['kind'] = r < 0.75 ? 'write' : r < 0.88 ? 'zero' : 'discard';
        let offset: number;
        let length: number;
        if (kind === 'discard') {
          offset = Math.floor(rand() * (sc.size / sc.clusterSize)) * sc.clusterSize;
          length = Math.min(sc.size - offset, sc.clusterSize * (1 + Math.floor(rand() * 2)));
        } else {
          length = SECTOR * (1 + Math.floor(rand() * (kind === 'write' ? 24 : 16)));
          // Half the writes continue a sequential stream (clusters filled piecewise).
          offset = kind === 'write' && rand() < 0.5 ? seqEnd : Math.floor(rand() * sectors) * SECTOR;
          if (offset + length > sc.size) offset = 0;
          if (kind === 'write') seqEnd = offset + length >= sc.size ? SECTOR : offset + length;
        }
        if (taken.some(([a, b]) => offset < b && offset + length > a)) continue;
        taken.push([offset, offset + length]);
        const op: Op = { id: ops.length + 1, kind, offset, length, startLog: fault.log.length };
        ops.push(op);
        if (kind === 'write') {
          const data = new Uint8Array(length);
          for (let s = 0; s < length / SECTOR; s++) data.set(sectorContent(op.id, offset / SECTOR + s), s * SECTOR);
          running.push(d.write(offset, data));
        } else if (kind === 'zero') {
          running.push(d.writeZeroes(offset, length, { mayUnmap: rand() < 0.5 }));
        } else {
          running.push(d.discard(offset, length));
        }
        // A flush racing the batch: it promises only the earlier batches.
        if (rand() < 0.1) running.push(flush(before));
      }
      await Promise.all(running);
      if (rand() < 0.3) await flush(ops.length);
    }
  } finally {
    await d.close();
  }
  return { base, log: fault.log, ops, flushes };
}

/** Image bytes plus, per host sector, whether some write or zeroing reached it. */
interface Replay {
  bytes: Uint8Array;
  written: Uint8Array;
  size: number;
}

function grow(img: Replay, end: number): void {
  if (end > img.bytes.length) {
    const cap = Math.max(end, img.bytes.length * 2);
    const bytes = new Uint8Array(cap);
    bytes.set(img.bytes.subarray(0, img.size));
    const written = new Uint8Array(Math.ceil(cap / SECTOR));
    written.set(img.written);
    img.bytes = bytes;
    img.written = written;
  }
  if (end > img.size) img.size = end;
}

function applyEntry(img: Replay, e: HostLogEntry, sectorMask?: () => boolean): void {
  if (e.kind === 'write') {
    grow(img, e.offset + e.data.length);
    for (let s = Math.floor(e.offset / SECTOR); s * SECTOR < e.offset + e.data.length; s++) {
      if (sectorMask && !sectorMask()) continue; // torn: this host sector did not make it
      const from = Math.max(e.offset, s * SECTOR);
      const to = Math.min(e.offset + e.data.length, (s + 1) * SECTOR);
      img.bytes.set(e.data.subarray(from - e.offset, to - e.offset), from);
      img.written[s] = 1;
    }
  } else if (e.kind === 'zero') {
    grow(img, e.offset + e.length);
    img.bytes.fill(0, e.offset, e.offset + e.length);
    img.written.fill(1, Math.floor(e.offset / SECTOR), Math.ceil((e.offset + e.length) / SECTOR));
  } else if (e.kind === 'truncate') {
    grow(img, e.length);
    img.bytes.fill(0, e.length);
    // Bytes cut off are gone: a later extension reads zeros nobody wrote.
    img.written.fill(0, Math.ceil(e.length / SECTOR));
    img.size = e.length;
  }
}

/** Index after data: every BAT entry of the cut image points at a cluster all of whose sectors were written. */
function assertBatPointsAtWrittenData(img: Replay, where: string): { unclean: boolean } {
  const bytes = img.bytes.subarray(0, img.size);
  const header = decodeHeader(bytes.subarray(0, 64), 'cut.hds');
  const layout = layoutOf(header, img.size, 'cut.hds');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < layout.batEntries; i++) {
    const entry = view.getUint32(batEntryOffset(i), true);
    if (entry === 0) continue;
    const host = entryToHost(layout, entry);
    assert.ok(host + layout.clusterSize <= img.size, `${where}: BAT entry ${i} points at ${host}, past the end of the file (${img.size})`);
    for (let s = host / SECTOR; s < (host + layout.clusterSize) / SECTOR; s++) {
      if (img.written[s] !== 1) assert.fail(`${where}: BAT entry ${i} points at cluster ${host} whose sector ${s} never reached the disk`);
    }
  }
  return { unclean: header.inUse === INUSE_MAGIC };
}

function qemuCheck(file: string): { corruptions: number; leaks: number; checkErrors: number; allocated: number; status: number; text: string } {
  const r = spawnSync('qemu-img', ['check', '-f', 'parallels', '--output=json', file], { encoding: 'utf8' });
  const json = JSON.parse(r.stdout || '{}') as { corruptions?: number; leaks?: number; 'check-errors'?: number; 'allocated-clusters'?: number };
  return {
    corruptions: json.corruptions ?? 0,
    leaks: json.leaks ?? 0,
    checkErrors: json['check-errors'] ?? 0,
    allocated: json['allocated-clusters'] ?? 0,
    status: r.status ?? -1,
    text: r.stdout + r.stderr,
  };
}

async function vdiskCheck(bytes: Uint8Array, readOnly: boolean): Promise<{ corruptions: number; leaks: number; checkErrors: number }> {
  const d = await openOn(new MemoryHostFile('cut.hds', bytes, { readOnly, share: true }), { readOnly, noRepair: true });
  try {
    const r = await d.check('none');
    return { corruptions: r.corruptions, leaks: r.leaks, checkErrors: r.checkErrors };
  } finally {
    await d.close();
  }
}

/** What each guest sector may hold at a cut: its last flushed value, or that of an op started before the cut. */
function expectations(sc: Scenario, ops: readonly Op[], covered: number, cut: number): { durable: Int32Array; allowed: Map<number, Set<number>> } {
  const durable = new Int32Array(sc.size / SECTOR);
  const allowed = new Map<number, Set<number>>();
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i] as Op;
    const first = op.offset / SECTOR;
    const last = first + Math.ceil(op.length / SECTOR);
    const value = op.kind === 'write' ? op.id : 0;
    if (i < covered) {
      for (let s = first; s < last; s++) durable[s] = value;
    } else if (op.startLog <= cut) {
      for (let s = first; s < last; s++) {
        let set = allowed.get(s);
        if (!set) allowed.set(s, (set = new Set()));
        set.add(value);
      }
    }
  }
  return { durable, allowed };
}

async function runScenario(sc: Scenario): Promise<void> {
  const { base, log, ops, flushes } = await runWorkload(sc);
  const rand = prng(sc.seed ^ 0x5eed);
  const cuts = Array.from({ length: CUTS }, () => 1 + Math.floor(rand() * log.length)).sort((a, b) => a - b);
  const durable: Replay = { bytes: base.slice(), written: new Uint8Array(Math.ceil(base.length / SECTOR)).fill(1), size: base.length };
  let applied = 0;
  const dir = tmpDir();
  let qemuChecks = 0;
  try {
    for (const [n, cut] of cuts.entries()) {
      let covers = 0;
      for (let i = cut - 1; i >= 0; i--) {
        const e = log[i];
        if (e?.kind === 'sync') {
          covers = e.covers;
          break;
        }
      }
      for (; applied < covers; applied++) {
        const e = log[applied];
        if (e) applyEntry(durable, e);
      }
      const img: Replay = { bytes: durable.bytes.slice(0, durable.size), written: durable.written.slice(), size: durable.size };
      const pending: HostLogEntry[] = log.slice(covers, cut).filter((e) => e.kind !== 'sync');
      for (let i = pending.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [pending[i], pending[j]] = [pending[j] as HostLogEntry, pending[i] as HostLogEntry];
      }
      for (const e of pending) {
        const r = rand();
        if (r < 0.4) continue;
        applyEntry(img, e, r < 0.6 ? () => rand() < 0.5 : undefined);
      }
      const where = `${sc.name}, cut ${cut}/${log.length}`;
      const { unclean } = assertBatPointsAtWrittenData(img, where);
      const bytes = img.bytes.slice(0, img.size);
      const c = await vdiskCheck(bytes, true);
      assert.deepEqual({ corruptions: c.corruptions, checkErrors: c.checkErrors }, { corruptions: unclean ? 1 : 0, checkErrors: 0 }, `${where}: vdisk check`);
      const sampled = n % Math.max(1, Math.floor(cuts.length / QEMU_SAMPLE)) === 0 && qemuChecks < QEMU_SAMPLE;
      if (sampled) {
        qemuChecks++;
        const file = path.join(dir, 'cut.hds');
        fs.writeFileSync(file, bytes);
        const q = qemuCheck(file);
        assert.deepEqual({ corruptions: q.corruptions, checkErrors: q.checkErrors }, { corruptions: unclean ? 1 : 0, checkErrors: 0 }, `${where}: qemu-img check: ${q.text}`);
      }
      // A read-write open repairs the cut image; then the content model.
      const host = new MemoryHostFile('cut.hds', bytes, { share: true });
      const d = await openOn(host, { readOnly: false });
      const disk = new Uint8Array(sc.size);
      try {
        await d.read(0, disk);
      } finally {
        await d.close();
      }
      const covered = flushes.filter((f) => f.doneLog <= cut).reduce((m, f) => Math.max(m, f.coveredOps), 0);
      const { durable: durableVal, allowed } = expectations(sc, ops, covered, cut);
      const diskBuf = Buffer.from(disk.buffer, disk.byteOffset, disk.byteLength);
      for (let s = 0; s < sc.size / SECTOR; s++) {
        const got = decodeSector(diskBuf, s);
        if (got === durableVal[s] || allowed.get(s)?.has(got)) continue;
        assert.fail(`${where}: sector ${s} holds op ${got}, expected ${durableVal[s]} or one of ${[...(allowed.get(s) ?? [])].join(',')}`);
      }
      const repaired = host.bytes();
      assert.deepEqual(await vdiskCheck(repaired, true), { corruptions: 0, leaks: 0, checkErrors: 0 }, `${where}: repaired image`);
      if (sampled) {
        const file = path.join(dir, 'repaired.hds');
        fs.writeFileSync(file, repaired);
        const q = qemuCheck(file);
        // qemu-img 7.2 reports the unused header clusters of an image with no data cluster as
        // leaked (its own fresh images too: image end = one cluster); vdisk's check does not.
        const emptyQuirk = q.status === 3 && q.allocated === 0 && q.corruptions === 0;
        assert.ok(q.status === 0 || emptyQuirk, `${where}: qemu-img check of the repaired image: ${q.text}`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const SCENARIOS: Scenario[] = [
  { name: '4 KiB clusters', size: 4 * 1024 * 1024, clusterSize: 4096, v1: false, seed: 71 },
  { name: '64 KiB clusters', size: 4 * 1024 * 1024, clusterSize: 65536, v1: false, seed: 72 },
  { name: 'v1 header (BAT in sectors), 4 KiB clusters', size: 4 * 1024 * 1024, clusterSize: 4096, v1: true, seed: 73 },
];

for (const sc of SCENARIOS) {
  test(`ploop power cut at ${CUTS} points (${sc.name}): no BAT entry points at unwritten data, every flushed write reads back`, async () => {
    await runScenario(sc);
  });
}
