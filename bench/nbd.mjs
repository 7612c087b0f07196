#!/usr/bin/env node
// NBD server benchmark: `vdisk serve` vs `qemu-nbd` on the same image, in the
// same run, alternating servers, median of N runs, ratio vdisk/qemu-nbd
// (throughput or IOPS; higher is better).
//
//   node bench/nbd.mjs [--runs N] [--size-mib N] [--seconds N] [--only substring] [--warm]
//
// --warm: each server first runs the workload once untimed (a long-running server's steady
// state: vdisk's JIT has compiled its request path; the same pass for qemu-nbd).
//
// Workloads, for a raw and a qcow2 image (fully written, so nothing is skipped as a hole):
//   seq-read   nbdcopy URI null:                  (MiB/s)
//   seq-write  nbdcopy SOURCE.raw URI             (MiB/s)
//   rand-read / rand-write 4 KiB at depth 1 and 32: fio --ioengine=nbd (IOPS)
// Both servers: -t -e 4 (multi-conn allowed, so nbdcopy uses its 4 connections), cache writeback.
import './env.mjs';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const runs = Number(opt('--runs', 3));
const sizeMiB = Number(opt('--size-mib', 1024));
const seconds = Number(opt('--seconds', 5));
const only = opt('--only', null);
const warm = args.includes('--warm');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = fs.mkdtempSync(path.join(process.env.VDISK_BENCH_DIR ?? os.tmpdir(), 'vdisk-bench-nbd-'));

const sh = (cmd, argv) => execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function serverCommand(which, image, fmt, sock) {
  if (which === 'vdisk') return [process.execPath, [...(process.env.VDISK_NODE_ARGS ? process.env.VDISK_NODE_ARGS.split(' ') : []), path.join(root, 'bin/vdisk.cjs'), 'serve', '-k', sock, '-f', fmt, '-t', '-e', '4', image]];
  return ['qemu-nbd', ['-k', sock, '-f', fmt, '-t', '-e', '4', '--cache=writeback', image]];
}

async function withServer(which, image, fmt, fn) {
  const sock = path.join(dir, `${which}.sock`);
  fs.rmSync(sock, { force: true });
  const [cmd, argv] = serverCommand(which, image, fmt, sock);
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((r) => proc.once('exit', r));
  for (let i = 0; !fs.existsSync(sock); i++) {
    if (i > 500) throw new Error(`${which} did not start`);
    await new Promise((r) => setTimeout(r, 20));
  }
  try {
    return fn(`nbd+unix:///?socket=${sock}`);
  } finally {
    proc.kill('SIGTERM');
    await exited;
  }
}

function timed(fn) {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function fio(uri, rw, depth) {
  const out = sh('fio', ['--name=b', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, '--bs=4k', `--iodepth=${depth}`, `--runtime=${seconds}`, '--time_based', '--output-format=json', `--size=${sizeMiB}M`]);
  const job = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  return rw.includes('read') ? job.read.iops : job.write.iops;
}

const workloads = [
  { name: 'seq-read (nbdcopy to null:)', unit: 'MiB/s', run: (uri) => sizeMiB / timed(() => sh('nbdcopy', [uri, 'null:'])) },
  { name: 'seq-write (nbdcopy from a raw file)', unit: 'MiB/s', run: (uri, src) => sizeMiB / timed(() => sh('nbdcopy', [src, uri])) },
  { name: 'rand-read 4k qd1 (fio nbd)', unit: 'IOPS', run: (uri) => fio(uri, 'randread', 1) },
  { name: 'rand-read 4k qd32 (fio nbd)', unit: 'IOPS', run: (uri) => fio(uri, 'randread', 32) },
  { name: 'rand-write 4k qd1 (fio nbd)', unit: 'IOPS', run: (uri) => fio(uri, 'randwrite', 1) },
  { name: 'rand-write 4k qd32 (fio nbd)', unit: 'IOPS', run: (uri) => fio(uri, 'randwrite', 32) },
];

try {
  const src = path.join(dir, 'src.raw');
  sh('qemu-img', ['create', '-q', '-f', 'raw', src, `${sizeMiB}M`]);
  sh('qemu-io', ['-f', 'raw', '-c', `write -P 0x5a 0 ${sizeMiB}M`, src]);
  const rows = [];
  for (const fmt of ['raw', 'qcow2']) {
    const image = path.join(dir, `img.${fmt}`);
    for (const w of workloads) {
      const label = `${fmt} ${w.name}`;
      if (only && !label.includes(only)) continue;
      const results = { vdisk: [], 'qemu-nbd': [] };
      for (let i = 0; i < runs; i++) {
        for (const which of i % 2 === 0 ? ['vdisk', 'qemu-nbd'] : ['qemu-nbd', 'vdisk']) {
          // A fresh, fully written image per run: no run profits from another's allocations.
          fs.rmSync(image, { force: true });
          sh('qemu-img', ['convert', '-f', 'raw', '-O', fmt, src, image]);
          results[which].push(
            await withServer(which, image, fmt, (uri) => {
              if (warm) w.run(uri, src);
              return w.run(uri, src);
            }),
          );
        }
      }
      const v = median(results.vdisk);
      const q = median(results['qemu-nbd']);
      rows.push({ label, unit: w.unit, v, q, vs: results.vdisk, qs: results['qemu-nbd'] });
      console.log(`${label.padEnd(44)} vdisk ${v.toFixed(0).padStart(8)} ${w.unit.padEnd(6)} qemu-nbd ${q.toFixed(0).padStart(8)}   ratio ${(v / q).toFixed(2)}x`);
    }
  }
  // The range of the runs next to each median: on shared machines a row's spread says how far to trust its ratio.
  const range = (xs) => `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`;
  console.log(`\n| workload | vdisk | qemu-nbd | vdisk/qemu-nbd |\n|---|---:|---:|---:|`);
  for (const r of rows) console.log(`| ${r.label} | ${r.v.toFixed(0)} ${r.unit} (${range(r.vs)}) | ${r.q.toFixed(0)} ${r.unit} (${range(r.qs)}) | ${(r.v / r.q).toFixed(2)}x |`);
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
