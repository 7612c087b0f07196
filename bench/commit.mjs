#!/usr/bin/env node
// Offline commit benchmark: `vdisk commit` vs `qemu-img commit` of an overlay
// holding N MiB of data into its backing file, same machine, same run,
// alternating tools, median of N runs, ratio qemu/vdisk of the wall time
// (higher is better for vdisk).
//
//   node bench/commit.mjs [--runs N] [--size-mib N] [--fmt qcow2]
//
// Each run starts from fresh files: a base of 2×size (its first half written
// with 0x11) and an overlay (qcow2, 64 KiB clusters) whose whole first `size`
// MiB was written with 0x22, so every cluster of the top is copied down.
import './env.mjs';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const runs = Number(opt('--runs', 3));
const sizeMiB = Number(opt('--size-mib', 1024));
const baseFmt = opt('--fmt', 'qcow2');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = fs.mkdtempSync(path.join(process.env.VDISK_BENCH_DIR ?? os.tmpdir(), 'vdisk-bench-commit-'));
const sh = (cmd, argv) => execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function prepare() {
  const base = path.join(dir, `base.${baseFmt}`);
  const top = path.join(dir, 'top.qcow2');
  fs.rmSync(base, { force: true });
  fs.rmSync(top, { force: true });
  sh('qemu-img', ['create', '-q', '-f', baseFmt, base, `${2 * sizeMiB}M`]);
  sh('qemu-io', ['-f', baseFmt, '-c', `write -P 0x11 0 ${sizeMiB}M`, base]);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', baseFmt, top]);
  sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x22 0 ${sizeMiB}M`, top]);
  sh('sync', []);
  return top;
}

function commit(which, top) {
  const [cmd, argv] =
    which === 'vdisk'
      ? [process.execPath, [...(process.env.VDISK_NODE_ARGS ? process.env.VDISK_NODE_ARGS.split(' ') : []), path.join(root, 'bin/vdisk.cjs'), 'commit', '-q', '-f', 'qcow2', top]]
      : ['qemu-img', ['commit', '-q', '-f', 'qcow2', top]];
  const t0 = process.hrtime.bigint();
  sh(cmd, argv);
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

try {
  const times = { vdisk: [], qemu: [] };
  for (let i = 0; i < runs; i++) {
    for (const which of i % 2 === 0 ? ['vdisk', 'qemu'] : ['qemu', 'vdisk']) {
      const top = prepare();
      times[which].push(commit(which, top));
      // Both tools must leave the same data below: the top's 0x22 over the whole range.
      const base = path.join(dir, `base.${baseFmt}`);
      sh('qemu-io', ['-f', baseFmt, '-c', `read -P 0x22 0 ${sizeMiB}M`, base]);
    }
  }
  const v = median(times.vdisk);
  const q = median(times.qemu);
  console.log(`commit ${sizeMiB} MiB qcow2 -> ${baseFmt}: vdisk ${v.toFixed(2)} s (${times.vdisk.map((t) => t.toFixed(2)).join(' ')})  qemu-img ${q.toFixed(2)} s (${times.qemu.map((t) => t.toFixed(2)).join(' ')})  ratio qemu/vdisk ${(q / v).toFixed(2)}x`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
