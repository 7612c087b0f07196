/**
 * Power-cut tests. A random workload (concurrent writes, zeroes, discards,
 * flushes; sequential runs that exercise COW cancellation) runs on an image
 * whose host file records every write and sync. Each cut replays a prefix of
 * that log: everything a completed sync covered, then the writes after it,
 * some dropped, the rest reordered and torn at 512-byte sectors. For every cut
 * the image opens, vdisk's check (qemu-img check for a sample) finds no
 * corruption (leaks are allowed), and every write completed before a flush
 * reads back (or a later write of the same sector).
 *
 * VDISK_CRASH_CUTS sets the cuts per scenario (default 400).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FaultHostFile, type HostLogEntry } from '../../src/host/fault-file.js';
import { checkBytes, freshImageBytes, openOnHost, prng, qemuCheck, tmpDir } from './image-helpers.js';
import { MemoryHostFile } from './memory-host.js';

const CUTS = Number(process.env['VDISK_CRASH_CUTS'] ?? 400);
const QEMU_SAMPLE = 8;
const SECTOR = 512;

interface Op {
  readonly id: number;
  readonly kind: 'write' | 'zero' | 'discard';
  readonly offset: number;
  readonly length: number;
  /** Log length when the op started: it cannot have reached a cut before that. */
  startLog: number;
}

interface Flush {
  /** Ops completed before the flush started (all earlier batches). */
  readonly coveredOps: number;
  /** Log length when the flush completed. */
  doneLog: number;
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

/**
 * Which op wrote sector `s` of `disk` (0 = zeros), or -1 when it matches none.
 * Tearing is at whole sectors, so sampling every 7th byte after the tag is enough.
 */
function decodeSector(disk: Buffer, s: number): number {
  const off = s * SECTOR;
  const id = disk.readUInt32LE(off);
  const sector = disk.readUInt32LE(off + 4);
  if (id === 0 && sector === 0) return disk.compare(ZERO_SECTOR, 0, SECTOR, off, off + SECTOR) === 0 ? 0 : -1;
  if (sector !== s) return -1;
  for (let i = 8; i < SECTOR; i += 7) if (disk[off + i] !== ((id * 13 + s * 7 + i) & 0xff)) return -1;
  return id;
}

interface Scenario {
  readonly name: string;
  readonly size: number;
  readonly options: Record<string, string>;
  readonly clusterSize: number;
  readonly seed: number;
}

/** Runs the workload; returns the base image, the log, the ops in batch order and the flushes. */
async function runWorkload(sc: Scenario): Promise<{ base: Uint8Array; log: HostLogEntry[]; ops: Op[]; batches: number[]; flushes: Flush[] }> {
  const base = await freshImageBytes(sc.size, sc.options);
  const fault = new FaultHostFile(new MemoryHostFile('img.qcow2', base));
  const d = await openOnHost(fault, { readOnly: false });
  const rand = prng(sc.seed);
  const ops: Op[] = [];
  /** batchOf[i] = the batch index of ops[i]. */
  const batches: number[] = [];
  const flushes: Flush[] = [];
  let seqEnd = SECTOR;
  const sectors = sc.size / SECTOR;
  try {
    for (let batch = 0; batch < 60; batch++) {
      const n = 1 + Math.floor(rand() * 8);
      const taken: Array<[number, number]> = [];
      const running: Promise<void>[] = [];
      for (let k = 0; k < n; k++) {
        const r = rand();
        const kind: Op['kind'] = r < 0.75 ? 'write' : r < 0.88 ? 'zero' : 'discard';
        let offset: number;
        let length: number;
        if (kind === 'discard') {
          const clusters = sc.size / sc.clusterSize;
          offset = Math.floor(rand() * clusters) * sc.clusterSize;
          length = Math.min(sc.size - offset, sc.clusterSize * (1 + Math.floor(rand() * 2)));
        } else {
          length = SECTOR * (1 + Math.floor(rand() * (kind === 'write' ? 24 : 16)));
          // Half the writes continue a sequential stream (COW cancellation).
          offset = kind === 'write' && rand() < 0.5 ? seqEnd : Math.floor(rand() * sectors) * SECTOR;
          if (offset + length > sc.size) offset = 0;
          if (kind === 'write') seqEnd = offset + length >= sc.size ? SECTOR : offset + length;
        }
        if (taken.some(([a, b]) => offset < b && offset + length > a)) continue;
        taken.push([offset, offset + length]);
        const op: Op = { id: ops.length + 1, kind, offset, length, startLog: fault.log.length };
        ops.push(op);
        batches.push(batch);
        if (kind === 'write') {
          const data = new Uint8Array(length);
          for (let s = 0; s < length / SECTOR; s++) data.set(sectorContent(op.id, offset / SECTOR + s), s * SECTOR);
          running.push(d.write(offset, data));
        } else if (kind === 'zero') {
          running.push(d.writeZeroes(offset, length, { mayUnmap: rand() < 0.5 }));
        } else {
          running.push(d.discard(offset, length));
        }
      }
      await Promise.all(running);
      if (rand() < 0.3) {
        const f: Flush = { coveredOps: ops.length, doneLog: 0 };
        await d.flush();
        f.doneLog = fault.log.length;
        flushes.push(f);
      }
    }
  } finally {
    await d.close();
  }
  return { base, log: fault.log, ops, batches, flushes };
}

function applyEntry(img: { bytes: Uint8Array; size: number }, e: HostLogEntry, sectorMask?: (s: number) => boolean): void {
  const grow = (end: number): void => {
    if (end > img.bytes.length) {
      const next = new Uint8Array(Math.max(end, img.bytes.length * 2));
      next.set(img.bytes.subarray(0, img.size));
      img.bytes = next;
    }
    if (end > img.size) img.size = end;
  };
  if (e.kind === 'write') {
    grow(e.offset + e.data.length);
    if (!sectorMask) {
      img.bytes.set(e.data, e.offset);
      return;
    }
    // Torn: only some of the 512-byte host sectors it touches made it.
    for (let s = Math.floor(e.offset / SECTOR); s * SECTOR < e.offset + e.data.length; s++) {
      if (!sectorMask(s)) continue;
      const from = Math.max(e.offset, s * SECTOR);
      const to = Math.min(e.offset + e.data.length, (s + 1) * SECTOR);
      img.bytes.set(e.data.subarray(from - e.offset, to - e.offset), from);
    }
  } else if (e.kind === 'zero') {
    grow(e.offset + e.length);
    img.bytes.fill(0, e.offset, e.offset + e.length);
  } else if (e.kind === 'truncate') {
    grow(e.length);
    img.bytes.fill(0, e.length);
    img.size = e.length;
  }
}

async function runScenario(sc: Scenario): Promise<void> {
  const { base, log, ops, batches, flushes } = await runWorkload(sc);
  const rand = prng(sc.seed ^ 0x5eed);
  const cuts = Array.from({ length: CUTS }, () => 1 + Math.floor(rand() * log.length)).sort((a, b) => a - b);
  // The durable prefix advances with the cuts (they are sorted).
  const durable = { bytes: base.slice(), size: base.length };
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
      const img = { bytes: durable.bytes.slice(0, durable.size), size: durable.size };
      const pending: HostLogEntry[] = log.slice(covers, cut).filter((e) => e.kind !== 'sync');
      for (let i = pending.length - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        const t = pending[i] as HostLogEntry;
        pending[i] = pending[j] as HostLogEntry;
        pending[j] = t;
      }
      for (const e of pending) {
        const r = rand();
        if (r < 0.4) continue;
        applyEntry(img, e, r < 0.6 ? () => rand() < 0.5 : undefined);
      }
      const bytes = img.bytes.subarray(0, img.size);
      const where = `${sc.name}, cut ${cut}/${log.length}`;
      const c = await checkBytes(bytes);
      if (c.corruptions !== 0 && process.env['VDISK_CRASH_DUMP']) fs.writeFileSync(process.env['VDISK_CRASH_DUMP'], bytes);
      assert.equal(c.corruptions, 0, `${where}: vdisk check finds corruption`);
      assert.equal(c.checkErrors, 0, `${where}: vdisk check errors`);
      if (n % Math.max(1, Math.floor(cuts.length / QEMU_SAMPLE)) === 0 && qemuChecks < QEMU_SAMPLE) {
        qemuChecks++;
        const file = path.join(dir, 'cut.qcow2');
        fs.writeFileSync(file, bytes);
        const q = qemuCheck(file);
        assert.equal(q.corruptions, 0, `${where}: qemu-img check finds corruption`);
        assert.ok(q.status === 0 || q.status === 3, `${where}: qemu-img check exit ${q.status}`);
      }
      // Content: every sector holds its last flushed value or that of a later op.
      const lastFlush = flushes.filter((f) => f.doneLog <= cut).pop();
      const covered = lastFlush?.coveredOps ?? 0;
      const d = await openOnHost(new MemoryHostFile('cut.qcow2', bytes, { readOnly: true, share: true }), { readOnly: true });
      const disk = new Uint8Array(sc.size);
      try {
        await d.read(0, disk);
      } finally {
        await d.close();
      }
      const durableVal = new Int32Array(sc.size / SECTOR);
      const allowed = new Map<number, Set<number>>();
      for (let i = 0; i < ops.length; i++) {
        const op = ops[i] as Op;
        const first = op.offset / SECTOR;
        const last = first + Math.ceil(op.length / SECTOR);
        if (i < covered) {
          for (let s = first; s < last; s++) durableVal[s] = op.kind === 'write' ? op.id : 0;
        } else if (op.startLog <= cut) {
          for (let s = first; s < last; s++) {
            let set = allowed.get(s);
            if (!set) allowed.set(s, (set = new Set()));
            set.add(op.kind === 'write' ? op.id : 0);
          }
        }
      }
      void batches;
      const diskBuf = Buffer.from(disk.buffer, disk.byteOffset, disk.byteLength);
      for (let s = 0; s < sc.size / SECTOR; s++) {
        const got = decodeSector(diskBuf, s);
        if (got === durableVal[s] || allowed.get(s)?.has(got)) continue;
        const raw = disk.subarray(s * SECTOR, (s + 1) * SECTOR);
        const dv = new DataView(raw.buffer, raw.byteOffset, 8);
        assert.fail(`${where}: sector ${s} holds op ${got} (starts id=${dv.getUint32(0, true)} sector=${dv.getUint32(4, true)}, nonzero=${raw.filter((x) => x !== 0).length}), expected ${durableVal[s]} or one of ${[...(allowed.get(s) ?? [])].join(',')}`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const SCENARIOS: Scenario[] = [
  { name: '4 KiB clusters', size: 4 * 1024 * 1024, options: { cluster_size: '4096' }, clusterSize: 4096, seed: 11 },
  { name: '64 KiB clusters', size: 4 * 1024 * 1024, options: {}, clusterSize: 65536, seed: 22 },
  { name: 'extended L2, 64 KiB clusters', size: 4 * 1024 * 1024, options: { extended_l2: 'on', cluster_size: '65536' }, clusterSize: 65536, seed: 33 },
];

for (const sc of SCENARIOS) {
  test(`power cut at ${CUTS} points (${sc.name}): image checks clean and holds every flushed write`, async () => {
    await runScenario(sc);
  });
}
