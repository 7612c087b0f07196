#!/usr/bin/env node
// ploop / parallels benchmark: `vdisk bench -f parallels` against
// `qemu-img bench -f parallels` on the same images in the same run,
// alternating tools, median of N runs (default 5), each after a sync; prints both request-loop
// times (as each tool reports them) and the ratio QEMU time / vdisk time
// (higher is better for vdisk).
//
//   node bench/ploop.mjs [--runs N] [--cache writeback|none] [--markdown]
//
// Workloads: random 4 KiB reads and overwrites at depth 1 and 32 on a fully
// written image (default 1 MiB clusters), and sequential 1 MiB allocating
// writes on a fresh image. "Random" is a stride of an odd number of 4 KiB
// blocks (qemu-img bench has no random mode), so both tools visit the same
// scattered offsets. VDISK_BENCH_DIR sets the scratch directory.
import './env.mjs';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const runs = Number(opt('--runs', '5')) || 5;
const cache = opt('--cache', 'writeback');
const markdown = args.includes('--markdown');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VDISK = path.join(root, 'bin/vdisk.cjs');
const dir = fs.mkdtempSync(path.join(process.env.VDISK_BENCH_DIR ?? os.tmpdir(), 'vdisk-bench-ploop-'));
const MiB = 1024 ** 2;
const IMAGE = 512 * MiB;
const RANDOM_STEP = 4096 * 300007;

function sh(cmd, argv) {
  return execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
}
function tool(name, argv) {
  return name === 'vdisk' ? sh(process.execPath, [VDISK, ...argv]) : sh('qemu-img', argv);
}
function seconds(out) {
  const m = /Run completed in ([0-9.]+) seconds/.exec(out);
  if (!m) throw new Error(`no timing in: ${out}`);
  return Number(m[1]);
}
function median(xs) {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
}

const written = path.join(dir, 'written.hds');
sh('qemu-img', ['create', '-q', '-f', 'parallels', written, String(IMAGE)]);
sh('qemu-io', ['-f', 'parallels', '-c', `write -P 0xab 0 ${IMAGE}`, written]);
const fresh = path.join(dir, 'fresh.hds');
const newFresh = () => {
  fs.rmSync(fresh, { force: true });
  sh('qemu-img', ['create', '-q', '-f', 'parallels', fresh, String(2 * IMAGE)]);
  return fresh;
};

const workloads = [];
for (const depth of [1, 32]) {
  const c = depth === 1 ? 5000 : 40000;
  workloads.push({
    name: `random 4K reads, depth ${depth}, ${IMAGE / MiB} MiB written image`,
    args: ['-f', 'parallels', '-t', cache, '-c', String(c), '-d', String(depth), '-S', String(RANDOM_STEP)],
    image: () => written,
  });
}
for (const depth of [1, 32]) {
  const c = depth === 1 ? 5000 : 30000;
  workloads.push({
    name: `random 4K writes (overwrite), depth ${depth}, ${IMAGE / MiB} MiB written image`,
    args: ['-f', 'parallels', '-w', '-t', cache, '-c', String(c), '-d', String(depth), '-S', String(RANDOM_STEP)],
    image: () => written,
  });
}
workloads.push({
  name: `sequential 1 MiB writes (allocating), depth 1, fresh image`,
  args: ['-f', 'parallels', '-w', '-t', cache, '-s', '1M', '-c', String(IMAGE / MiB), '-d', '1'],
  image: newFresh,
});

const rows = [];
try {
  for (const w of workloads) {
    const t = { vdisk: [], qemu: [] };
    for (let i = 0; i < runs; i++) {
      for (const name of i % 2 === 0 ? ['vdisk', 'qemu'] : ['qemu', 'vdisk']) {
        const image = w.image();
        // Start each run with no dirty pages left by the previous one: their writeback
        // otherwise lands inside whichever run comes next (seen: 0.07 s to 0.7 s spread).
        sh('sync', []);
        t[name].push(seconds(tool(name, ['bench', ...w.args, image])));
      }
    }
    const row = { name: w.name, command: `bench ${w.args.join(' ')} IMG`, vdisk: median(t.vdisk), qemu: median(t.qemu) };
    rows.push(row);
    if (!markdown) console.log(`${row.name}: vdisk ${row.vdisk.toFixed(3)} s, qemu-img ${row.qemu.toFixed(3)} s, ${(row.qemu / row.vdisk).toFixed(2)}x  [${t.vdisk.join(' ')} | ${t.qemu.join(' ')}]`);
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
if (markdown) {
  console.log('| workload | command | vdisk (s) | QEMU (s) | vdisk/QEMU |');
  console.log('|---|---|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.name} | \`${r.command}\` | ${r.vdisk.toFixed(3)} | ${r.qemu.toFixed(3)} | ${(r.qemu / r.vdisk).toFixed(2)}x |`);
}
