#!/usr/bin/env node
// The vdisk benchmark suite: each workload runs with vdisk and with QEMU's tool
// on the same machine in the same run, alternating, median of N runs, and
// prints both figures and the ratio vdisk/QEMU (throughput; higher is better).
//
//   node bench/run.mjs [--full] [--runs N] [--warmup N] [--only substring] [--markdown] [--prime-mib N] [--keep-ca-env]
//
// --warmup N (default 1): untimed rounds of both tools before the timed ones. The
// first run of a workload was slow whichever tool ran it (a 4 GiB convert right
// after its source was made: 2.4-4.6 s against 0.5 s for the next runs, vdisk or
// qemu-img alike), and vdisk runs first in the first round.
//
// --prime-mib N: before each timed convert or commit, write N MiB to a scratch
// file and delete it. On VMs whose free memory the host takes back (free page
// reporting: virtio-balloon), a command that fills the page cache otherwise
// pays for the host handing that memory back, at a cost that depends on how
// long the machine was idle before (the same convert took 1-7 s); priming
// makes both tools start from memory the guest already holds. The reporting
// runs about 2 s after memory is freed, so priming first waits that long after
// the previous run's output was deleted: without the wait, the report of that
// memory fell inside the next run, whose page-cache writes then went 10 times
// slower for a streak of 100-300 ms, mostly in the run that lasted longer.
//
// Each run's device stalls (bench/device-stalls.mjs: the scratch directory's disk busy with
// requests waiting while moving almost nothing) are printed under the row when there were any.
//
// Quick mode (default) uses small images so the whole suite takes a few
// minutes; --full uses the sizes of issue 4 (8 GiB read image, 4 GiB convert,
// 1 TiB map, 1 GiB commit). VDISK_BENCH_DIR sets the scratch directory (on the
// file system under test; default: a temp dir). `bench` timings are the
// request loop only (as qemu-img prints them); other workloads are wall time
// of the whole command, process start included, for both tools alike.
//
// Two references come with the convert rows: the start of a process (a convert
// of a 1 MiB file, both tools), and the floor of the copy itself: the same data
// copied by bench/copy-floor.c, a plain pread/pwrite loop built with cc.
import './env.mjs';
import { primeFreeMemory } from './prime.mjs';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { DeviceStalls } from './device-stalls.mjs';

// Strict: a mistyped option (or --help) stops here instead of starting a run of many minutes.
let parsed;
try {
  parsed = parseArgs({
    options: {
      full: { type: 'boolean', default: false },
      runs: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '1' },
      only: { type: 'string' },
      markdown: { type: 'boolean', default: false },
      'prime-mib': { type: 'string', default: '0' },
      'keep-ca-env': { type: 'boolean', default: false },
    },
    strict: true,
  }).values;
} catch (e) {
  console.error(`bench/run.mjs: ${e.message}\nusage: node bench/run.mjs [--full] [--runs N] [--warmup N] [--only substring] [--markdown] [--prime-mib N] [--keep-ca-env]`);
  process.exit(2);
}
const full = parsed.full;
const runs = Number(parsed.runs);
if (!(Number.isInteger(runs) && runs >= 1)) throw new Error('--runs takes a whole number of runs, at least 1');
const only = parsed.only ?? null;
const markdown = parsed.markdown;
const warmup = Number(parsed.warmup);
if (!(Number.isInteger(warmup) && warmup >= 0)) throw new Error('--warmup takes a whole number of rounds');
const primeMiB = Number(parsed['prime-mib']);
if (!(primeMiB >= 0)) throw new Error('--prime-mib takes a number of MiB');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VDISK = [process.execPath, path.join(root, 'bin/vdisk.cjs')];
const scratchRoot = process.env.VDISK_BENCH_DIR ?? os.tmpdir();
fs.mkdirSync(scratchRoot, { recursive: true });
removeAbandonedRuns(scratchRoot);
const dir = fs.mkdtempSync(path.join(scratchRoot, 'vdisk-bench-'));
fs.writeFileSync(path.join(dir, 'owner.pid'), String(process.pid));
const device = DeviceStalls.open(dir);

/**
 * The scratch directories of earlier runs whose process is gone (killed: the
 * suite runs synchronously, so it cannot clean up on a signal). A full run
 * leaves tens of GiB; two of them filled this machine's disk once.
 */
function removeAbandonedRuns(root) {
  for (const name of fs.readdirSync(root)) {
    if (!name.startsWith('vdisk-bench-')) continue;
    const owner = path.join(root, name, 'owner.pid');
    let pid;
    try {
      pid = Number(fs.readFileSync(owner, 'utf8'));
    } catch {
      continue; // not ours to judge: no owner recorded
    }
    if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) continue;
    fs.rmSync(path.join(root, name), { recursive: true, force: true });
    console.error(`bench: removed ${path.join(root, name)}, left by a run that is gone (pid ${pid})`);
  }
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

const S = full
  ? { readImage: 8 * GiB, reads1: 20000, reads32: 200000, writeImage: 8 * GiB, writes1: 20000, writes32: 100000, seq: 100000, convert: 4 * GiB, commit: GiB }
  : { readImage: 512 * MiB, reads1: 5000, reads32: 40000, writeImage: 1 * GiB, writes1: 5000, writes32: 30000, seq: 40000, convert: 256 * MiB, commit: 128 * MiB };
// A stride of an odd number of 4 KiB blocks visits the image in a scattered order (qemu-img bench has no random mode).
const RANDOM_STEP = 4096 * 300007;

function sh(cmd, argv, opts = {}) {
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 28, ...opts });
}
// Each tool's command is bracketed for the device sampler: the last one a workload's run
// makes is its timed command (images are made before it), so `device.last` is that one's.
function watched(cmd, argv) {
  device?.begin();
  try {
    return sh(cmd, argv);
  } finally {
    device?.end();
  }
}
function vdisk(argv) {
  return watched(VDISK[0], [VDISK[1], ...argv]);
}
function qemuImg(argv) {
  return watched('qemu-img', argv);
}
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
function benchSeconds(out) {
  const m = /Run completed in ([0-9.]+) seconds/.exec(out);
  if (!m) throw new Error(`no timing in: ${out}`);
  return Number(m[1]);
}
/**
 * Before a timed command that writes gigabytes into the page cache: the dirty
 * data of the previous run goes to the disk first (`sync`), so that neither
 * tool has the other's writeback competing with it, or is throttled by it;
 * with --prime-mib, the guest's free memory is primed first (see above).
 */
function settle() {
  // Let the host take back what the last run freed before priming (see the top of this file).
  if (primeMiB > 0) primeFreeMemory(f('prime.tmp'), primeMiB);
  sh('sync', []);
}
function wall(fn) {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}
const f = (name) => path.join(dir, name);

/** Builds a fully written qcow2 image (once per run of the suite). */
const prepared = new Map();
function once(key, build) {
  if (!prepared.has(key)) prepared.set(key, build());
  return prepared.get(key);
}
function fullImage(size) {
  return once(`full${size}`, () => {
    const img = f(`full-${size}.qcow2`);
    qemuImg(['create', '-q', '-f', 'qcow2', img, String(size)]);
    // qemu-io takes at most 2 GiB - 512 per write (without -n): 1 GiB pieces.
    const writes = [];
    for (let off = 0; off < size; off += GiB) writes.push('-c', `write -P 0xab ${off} ${Math.min(GiB, size - off)}`);
    sh('qemu-io', ['-f', 'qcow2', ...writes, img]);
    return img;
  });
}
function freshImage(name, size, opts = []) {
  const img = f(name);
  fs.rmSync(img, { force: true });
  qemuImg(['create', '-q', '-f', 'qcow2', ...opts, img, String(size)]);
  return img;
}

const workloads = [];
function benchWorkload(name, o) {
  workloads.push({
    name,
    command: `bench ${o.args.join(' ')} IMG`,
    run(tool) {
      const img = o.image();
      const argv = ['bench', ...o.args, img];
      return benchSeconds(tool === 'vdisk' ? vdisk(argv) : qemuImg(argv));
    },
    requests: o.requests,
  });
}

for (const cache of ['none', 'writeback']) {
  for (const depth of [1, 32]) {
    const c = depth === 1 ? S.reads1 : S.reads32;
    benchWorkload(`random 4K reads, depth ${depth}, cache ${cache}, ${S.readImage / GiB} GiB written image`, {
      args: ['-f', 'qcow2', '-t', cache, '-c', String(c), '-d', String(depth), '-S', String(RANDOM_STEP)],
      image: () => fullImage(S.readImage),
      requests: c,
    });
  }
}
for (const depth of [1, 32]) {
  const c = depth === 1 ? S.writes1 : S.writes32;
  benchWorkload(`random 4K writes, depth ${depth}, allocating (empty image), cache none`, {
    args: ['-f', 'qcow2', '-w', '-t', 'none', '-c', String(c), '-d', String(depth), '-S', String(RANDOM_STEP)],
    image: () => freshImage('alloc.qcow2', S.writeImage),
    requests: c,
  });
  benchWorkload(`random 4K writes, depth ${depth}, overwriting (preallocated), cache none`, {
    args: ['-f', 'qcow2', '-w', '-t', 'none', '-c', String(c), '-d', String(depth), '-S', String(RANDOM_STEP)],
    image: () => once(`prealloc${S.writeImage}`, () => freshImage('prealloc.qcow2', S.writeImage, ['-o', 'preallocation=falloc'])),
    requests: c,
  });
}
for (const ext of [false, true]) {
  for (const cache of ['none', 'writeback']) {
    for (const [label, offset] of [
      ['unaligned (offset 512)', 512],
      ['aligned (offset 0)', 0],
    ]) {
      for (const depth of [1, 16]) {
        const c = depth === 1 ? Math.floor(S.seq / 4) : S.seq;
        benchWorkload(`sequential 4K allocating writes ${label}, depth ${depth}, cache ${cache}${ext ? ', extended L2' : ''}`, {
          args: ['-f', 'qcow2', '-w', '-t', cache, '-c', String(c), '-d', String(depth), '-o', String(offset)],
          image: () => freshImage('seq.qcow2', Math.max(GiB, c * 4096 * 2), ext ? ['-o', 'extended_l2=on'] : []),
          requests: c,
        });
      }
    }
  }
}
// The raw-file limit, for reference: the same patterns on a plain file (both tools' raw drivers).
for (const [label, extra] of [
  ['random 4K writes', ['-S', String(RANDOM_STEP)]],
  ['sequential 4K writes', []],
]) {
  benchWorkload(`raw file: ${label}, depth 32, cache none`, {
    args: ['-f', 'raw', '-w', '-t', 'none', '-c', String(S.writes32), '-d', '32', ...extra],
    image: () => once(`raw${S.writeImage}`, () => {
      const img = f('plain.raw');
      fs.rmSync(img, { force: true });
      execFileSync('fallocate', ['-l', String(S.writeImage), img]);
      return img;
    }),
    requests: S.writes32,
  });
}

// The raw-file limit of the sequential qcow2 rows: the same writes (4 KiB, from offset 0,
// depth 16, cache none) into a plain file made fresh for each run and fallocated, as vdisk's
// qcow2 driver fallocates its data clusters ahead of the writes. The issue's bar is qcow2 at
// 0.8 of this, each tool against itself (printed at the end: from the two
// rows' medians, and measured in pairs, see measurePairedLimit).
const RAW_LIMIT_ROW = 'raw file: sequential 4K writes, depth 16, cache none, fresh fallocated file';
const QCOW2_SEQ_ROW = 'sequential 4K allocating writes aligned (offset 0), depth 16, cache none';
benchWorkload(RAW_LIMIT_ROW, {
  args: ['-f', 'raw', '-w', '-t', 'none', '-c', String(S.seq), '-d', '16', '-o', '0'],
  image: () => {
    const img = f('limit.raw');
    fs.rmSync(img, { force: true });
    execFileSync('fallocate', ['-l', String(Math.max(GiB, S.seq * 4096 * 2)), img]);
    return img;
  },
  requests: S.seq,
});

function halfDataRaw() {
  return once('halfraw', () => {
    const img = f('half.raw');
    fs.rmSync(img, { force: true });
    fs.closeSync(fs.openSync(img, 'w'));
    fs.truncateSync(img, S.convert);
    // Alternate 1 MiB of data and 1 MiB of hole.
    const fd = fs.openSync(img, 'r+');
    const data = Buffer.alloc(MiB, 0x5a);
    for (let off = 0; off < S.convert; off += 2 * MiB) fs.writeSync(fd, data, 0, MiB, off);
    fs.closeSync(fd);
    return img;
  });
}
function halfDataQcow2() {
  return once('halfqcow2', () => {
    const img = f('half.qcow2');
    qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', halfDataRaw(), img]);
    return img;
  });
}
for (const extra of [[], ['-W', '-m', '8']]) {
  const tag = extra.length ? ' -W -m 8' : '';
  workloads.push({
    name: `convert raw → qcow2${tag}, ${S.convert / GiB} GiB half data`,
    command: `convert -f raw -O qcow2${tag} SRC DST`,
    run(tool) {
      const out = f('conv-out.qcow2');
      fs.rmSync(out, { force: true });
      settle();
      const argv = ['convert', '-f', 'raw', '-O', 'qcow2', ...extra, halfDataRaw(), out];
      return wall(() => (tool === 'vdisk' ? vdisk(argv) : qemuImg(argv)));
    },
  });
  workloads.push({
    name: `convert qcow2 → raw${tag}, ${S.convert / GiB} GiB half data`,
    command: `convert -f qcow2 -O raw${tag} SRC DST`,
    run(tool) {
      const out = f('conv-out.raw');
      fs.rmSync(out, { force: true });
      settle();
      const argv = ['convert', '-f', 'qcow2', '-O', 'raw', ...extra, halfDataQcow2(), out];
      return wall(() => (tool === 'vdisk' ? vdisk(argv) : qemuImg(argv)));
    },
  });
}

// What bounds the convert rows, for reference. A process's start: a convert of a 1 MiB file,
// where the start is nearly all (Node's own start is most of vdisk's).
workloads.push({
  name: 'process start: convert raw → raw of a 1 MiB file',
  command: 'convert -f raw -O raw SRC DST',
  run(tool) {
    const src = once('tinyraw', () => {
      const img = f('tiny.raw');
      fs.writeFileSync(img, Buffer.alloc(MiB, 0x5a));
      return img;
    });
    const out = f('tiny-out.raw');
    fs.rmSync(out, { force: true });
    const argv = ['convert', '-f', 'raw', '-O', 'raw', src, out];
    return wall(() => (tool === 'vdisk' ? vdisk(argv) : qemuImg(argv)));
  },
});

/**
 * The convert floor: bench/copy-floor.c (a plain pread/pwrite loop in C) copying the
 * half-data file's data, timed as the convert rows are. Null where no C compiler is found.
 */
function copyFloorSeconds() {
  const bin = once('copyfloor', () => {
    const out = f('copy-floor');
    try {
      sh('cc', ['-O2', '-o', out, path.join(root, 'bench/copy-floor.c')]);
      return out;
    } catch {
      return null;
    }
  });
  if (bin === null) return null;
  const out = f('floor-out.raw');
  fs.rmSync(out, { force: true });
  settle();
  const src = halfDataRaw();
  return wall(() => sh(bin, [src, out]));
}

/** A 1 TiB image with `n` scattered allocated clusters (64 KiB), optionally on top of `backing`. */
function scattered(name, n, seed, backing) {
  const img = f(name);
  fs.rmSync(img, { force: true });
  const TiB = 1024 * GiB;
  qemuImg(['create', '-q', '-f', 'qcow2', ...(backing ? ['-b', backing, '-F', 'qcow2'] : []), img, String(TiB)]);
  const cmds = [];
  let x = seed >>> 0;
  const clusters = TiB / 65536;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    const c = Math.floor((x / 2 ** 32) * clusters);
    cmds.push('-c', `write -q -P ${(i % 200) + 1} ${c * 65536} 65536`);
  }
  for (let i = 0; i < cmds.length; i += 4000) sh('qemu-io', ['-f', 'qcow2', ...cmds.slice(i, i + 4000), img]);
  return img;
}
const mapClusters = 10000;
workloads.push({
  name: `map --output=json, 1 TiB image, ${mapClusters} scattered clusters`,
  command: 'map --output=json -f qcow2 IMG',
  run(tool) {
    const img = once('map1', () => scattered('map1.qcow2', mapClusters, 1));
    const argv = ['map', '--output=json', '-f', 'qcow2', img];
    return wall(() => (tool === 'vdisk' ? vdisk(argv) : qemuImg(argv)));
  },
});
workloads.push({
  name: `map --output=json, 3-deep chain of 1 TiB images, ${mapClusters} clusters each`,
  command: 'map --output=json -f qcow2 TOP',
  run(tool) {
    const top = once('map3', () => {
      const a = scattered('chain-a.qcow2', mapClusters, 2);
      const b = scattered('chain-b.qcow2', mapClusters, 3, a);
      return scattered('chain-c.qcow2', mapClusters, 4, b);
    });
    const argv = ['map', '--output=json', '-f', 'qcow2', top];
    return wall(() => (tool === 'vdisk' ? vdisk(argv) : qemuImg(argv)));
  },
});
workloads.push({
  name: `commit ${S.commit / MiB} MiB into its backing file`,
  command: 'commit -f qcow2 TOP',
  run(tool) {
    const base = f('commit-base.qcow2');
    const top = f('commit-top.qcow2');
    fs.rmSync(base, { force: true });
    fs.rmSync(top, { force: true });
    qemuImg(['create', '-q', '-f', 'qcow2', base, String(S.commit * 2)]);
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x33 0 ${S.commit}`, top]);
    settle();
    const argv = ['commit', '-f', 'qcow2', top];
    return wall(() => (tool === 'vdisk' ? vdisk(argv) : qemuImg(argv)));
  },
});

/** Whether the disk stalled in any of a row's runs. */
function stalled(row) {
  return [...row.stalls.vdisk, ...row.stalls.qemu].some((ms) => ms > 0);
}
function stallText(row) {
  return `vdisk ${row.stalls.vdisk.join(' ')}   qemu ${row.stalls.qemu.join(' ')}`;
}

const rows = [];
/** Times of bench/copy-floor.c, when convert rows ran. */
let floorRuns = null;
/** Per-round ratios of the raw-file limit measured in pairs (see measurePairedLimit), when both rows ran. */
let pairedLimit = null;

/**
 * The raw-file limit measured in pairs: in each round, each tool runs the raw
 * file's row and the qcow2 row back to back (which row goes first alternates),
 * and the round's ratio is raw time over qcow2 time. The table's two rows are
 * minutes apart in a run of the suite, and this machine's disk changed speed
 * by 20-40% over such spans (session 22: the same qcow2 row took 1.30-1.45 s
 * alone and 1.58-2.03 s inside the suites), so the ratio of their medians
 * measured the drift as much as the tools.
 */
function measurePairedLimit() {
  const rawRow = rows.find((r) => r.name === RAW_LIMIT_ROW);
  const seqRow = rows.find((r) => r.name === QCOW2_SEQ_ROW);
  if (!rawRow || !seqRow || rawRow.error || seqRow.error) return null;
  const rawW = workloads.find((w) => w.name === RAW_LIMIT_ROW);
  const seqW = workloads.find((w) => w.name === QCOW2_SEQ_ROW);
  const ratios = { vdisk: [], qemu: [] };
  try {
    for (let i = 0; i < runs; i++) {
      // Even rounds: vdisk first, each tool's raw row first; odd rounds the other way round.
      const rawFirst = i % 2 === 0;
      for (const tool of rawFirst ? ['vdisk', 'qemu'] : ['qemu', 'vdisk']) {
        const first = (rawFirst ? rawW : seqW).run(tool);
        const second = (rawFirst ? seqW : rawW).run(tool);
        ratios[tool].push(rawFirst ? first / second : second / first);
      }
    }
  } catch (e) {
    console.log(`\nraw-file limit in pairs: stopped (${String(e.stderr ?? e.message).split('\n')[0]})`);
    return null;
  }
  return ratios;
}
try {
  for (const w of workloads) {
    if (only && !w.name.includes(only)) continue;
    const times = { vdisk: [], qemu: [] };
    const stalls = { vdisk: [], qemu: [] };
    let error = null;
    // Untimed warm-up rounds first: the first run of a workload, whichever tool it was, took
    // 1-4 s where the next ones took 0.5 s (4 GiB convert, right after its source was made).
    for (let i = 0; i < warmup && !error; i++) {
      for (const tool of ['vdisk', 'qemu']) {
        try {
          w.run(tool);
        } catch (e) {
          error = `${tool}: ${String(e.stderr ?? e.message).split('\n')[0]}`;
          break;
        }
      }
    }
    for (let i = 0; i < runs && !error; i++) {
      for (const tool of i % 2 === 0 ? ['vdisk', 'qemu'] : ['qemu', 'vdisk']) {
        try {
          times[tool].push(w.run(tool));
          if (device) stalls[tool].push(device.last);
        } catch (e) {
          error = `${tool}: ${String(e.stderr ?? e.message).split('\n')[0]}`;
          break;
        }
      }
    }
    const v = times.vdisk.length ? median(times.vdisk) : NaN;
    const q = times.qemu.length ? median(times.qemu) : NaN;
    const row = { name: w.name, command: w.command, vdisk: v, qemu: q, ratio: q / v, requests: w.requests, error, times, stalls };
    rows.push(row);
    const rate = (t) => (w.requests ? ` (${Math.round(w.requests / t)} req/s)` : '');
    console.log(
      `${w.name}\n    vdisk ${v.toFixed(3)} s${rate(v)}   qemu ${q.toFixed(3)} s${rate(q)}   vdisk/QEMU ${(q / v).toFixed(2)}x${error ? `   ERROR ${error}` : ''}`,
    );
    // Every run in the order it ran (the first tool alternates): a slow first run shows here.
    console.log(`    runs: vdisk ${times.vdisk.map((t) => t.toFixed(3)).join(' ')}   qemu ${times.qemu.map((t) => t.toFixed(3)).join(' ')}`);
    if (stalled(row)) console.log(`    device stalled (ms, see bench/device-stalls.mjs): ${stallText(row)}`);
  }
  pairedLimit = measurePairedLimit();
  // After the convert rows, while their source is still there.
  if (rows.some((r) => r.name.startsWith('convert '))) {
    floorRuns = [];
    // A failure here (a full disk) must not lose the rows measured: they are printed below.
    try {
      for (let i = 0; i < warmup + runs; i++) {
        const t = copyFloorSeconds();
        if (t === null) break;
        if (i >= warmup) floorRuns.push(t);
      }
    } catch (e) {
      console.log(`\nconvert floor: stopped (${String(e.message).split('\n')[0]})`);
      floorRuns = null;
    }
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
// The convert rows against the floor of a copy on this machine (see copyFloorSeconds).
let floor = null;
if (floorRuns !== null) {
  if (floorRuns.length > 0) {
    floor = median(floorRuns);
    console.log(`\nconvert floor: bench/copy-floor.c (plain pread/pwrite of 1 MiB, one thread) copies the ${S.convert / GiB} GiB half-data file's data in ${floor.toFixed(3)} s`);
    console.log(`    runs: ${floorRuns.map((t) => t.toFixed(3)).join(' ')}`);
    for (const r of rows.filter((x) => x.name.startsWith('convert ') && !x.error)) {
      console.log(`    ${r.name}: vdisk ${(r.vdisk - floor).toFixed(3)} s above it, QEMU ${(r.qemu - floor).toFixed(3)} s`);
    }
  } else console.log('\nconvert floor: not measured (no C compiler: cc)');
}
// Sequential qcow2 writes against the raw-file limit, each tool against itself (throughput ratio).
const limit = rows.find((r) => r.name === RAW_LIMIT_ROW);
const seq = rows.find((r) => r.name === QCOW2_SEQ_ROW);
if (limit && seq && !limit.error && !seq.error) {
  console.log(
    `\nraw-file limit: qcow2 ${QCOW2_SEQ_ROW} at ${(limit.vdisk / seq.vdisk).toFixed(2)} of a raw file for vdisk, ${(limit.qemu / seq.qemu).toFixed(2)} for QEMU (bar: 0.8)`,
  );
  // The device's stalls move this ratio more than either tool does: say when they were there.
  for (const r of [seq, limit].filter(stalled)) console.log(`    device stalled in ${r.name} (ms): ${stallText(r)}`);
}
if (pairedLimit !== null) {
  const text = (xs) => `${median(xs).toFixed(2)} (rounds ${xs.map((x) => x.toFixed(2)).join(' ')})`;
  console.log(`raw-file limit in pairs (each round: the raw row and the qcow2 row back to back): vdisk ${text(pairedLimit.vdisk)}, QEMU ${text(pairedLimit.qemu)} (bar: 0.8)`);
}
if (markdown) {
  // The range of the runs next to each median: on shared machines a row's spread says how far to trust its ratio.
  const range = (xs) => (xs.length ? `${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)}` : '-');
  console.log('\n| workload | command | vdisk (s) | QEMU (s) | vdisk/QEMU |\n|---|---|---:|---:|---:|');
  for (const r of rows) {
    console.log(
      `| ${r.name} | \`${r.command}\` | ${r.vdisk.toFixed(3)} (${range(r.times.vdisk)}) | ${r.qemu.toFixed(3)} (${range(r.times.qemu)}) | ${r.ratio.toFixed(2)}x${r.error ? ` (${r.error})` : ''} |`,
    );
  }
  if (floor !== null) console.log(`\nConvert floor (bench/copy-floor.c, the same data by plain pread/pwrite in C): ${floor.toFixed(3)} s.`);
  const withStalls = rows.filter(stalled);
  if (withStalls.length > 0) {
    console.log('\nDevice stalls (ms per run, in the order of the runs; bench/device-stalls.mjs):\n');
    for (const r of withStalls) console.log(`- ${r.name}: ${stallText(r)}`);
  }
}
