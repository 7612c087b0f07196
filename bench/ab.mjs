#!/usr/bin/env node
// A/B of one convert between builds (or against qemu-img): each round runs every
// variant once, alternating, each from the same primed state, and prints the
// medians of wall time, CPU (task-clock), user and system time and page faults
// (perf stat), with every run's wall time.
//
//   node bench/ab.mjs [--rounds N] [--warmup N] [--prime-mib N] SRC SRCFMT DSTFMT "EXTRA ARGS" LABEL=COMMAND...
//
// COMMAND is what runs `convert -f SRCFMT -O DSTFMT EXTRA SRC OUT` with those
// arguments appended, e.g. `new=node bin/vdisk.cjs`, `old=node /tmp/wt/bin/vdisk.cjs`,
// `qemu=qemu-img`. Before each run: the previous output is deleted, then a 2.5 s
// wait (the host takes back freed memory about 2 s after it is freed, see
// run.mjs), then --prime-mib MiB (default 3072) written to a scratch file and
// deleted, then `sync`. OUT is next to SRC. Needs perf (linux-perf).
import './env.mjs';
import { primeFreeMemory } from './prime.mjs';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(name);
  if (i < 0) return fallback;
  const v = Number(args[i + 1]);
  args.splice(i, 2);
  if (!(v >= 0)) throw new Error(`${name} takes a number`);
  return v;
}
const rounds = option('--rounds', 5);
// Untimed rounds first: the first convert after the source was made or read took seconds, whichever tool ran it.
const warmup = option('--warmup', 1);
const primeMiB = option('--prime-mib', 3072);
const [src, from, to, extra, ...specs] = args;
if (!src || !from || !to || extra === undefined || specs.length === 0) {
  console.error('usage: node bench/ab.mjs [--rounds N] [--warmup N] [--prime-mib N] SRC SRCFMT DSTFMT "EXTRA ARGS" LABEL=COMMAND...');
  process.exit(2);
}
const variants = specs.map((s) => {
  const i = s.indexOf('=');
  if (i <= 0) throw new Error(`not LABEL=COMMAND: ${s}`);
  return { label: s.slice(0, i), command: s.slice(i + 1).split(/\s+/).filter(Boolean), runs: [] };
});
const dir = path.dirname(path.resolve(src));
const out = path.join(dir, `ab-out.${to}`);
const scratch = path.join(dir, 'ab-prime.tmp');
const statFile = path.join(dir, 'ab-perf.txt');

function prime() {
  primeFreeMemory(scratch, primeMiB);
  execFileSync('sync');
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

for (let r = -warmup; r < rounds; r++) {
  for (const v of variants) {
    fs.rmSync(out, { force: true });
    prime();
    const [cmd, ...cmdArgs] = v.command;
    const convert = ['convert', '-f', from, '-O', to, ...extra.split(/\s+/).filter(Boolean), src, out];
    const res = spawnSync(
      'perf',
      ['stat', '-x,', '-e', 'task-clock,duration_time,user_time,system_time,page-faults', '-o', statFile, '--', cmd, ...cmdArgs, ...convert],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    if (res.status !== 0) throw new Error(`${v.label}: exit status ${res.status}`);
    const stat = {};
    for (const line of fs.readFileSync(statFile, 'utf8').split('\n')) {
      const f = line.split(',');
      if (f.length > 3 && /^[0-9.]+$/.test(f[0])) stat[f[2]] = Number(f[0]);
    }
    if (r < 0) continue;
    v.runs.push({
      wall: stat['duration_time'] / 1e6,
      cpu: stat['task-clock'],
      user: stat['user_time'] / 1e6,
      sys: stat['system_time'] / 1e6,
      faults: stat['page-faults'],
    });
  }
}
fs.rmSync(out, { force: true });
fs.rmSync(statFile, { force: true });
for (const v of variants) {
  const m = (k) => Math.round(median(v.runs.map((x) => x[k])));
  console.log(
    `${v.label.padEnd(12)} wall ${m('wall')} ms  cpu ${m('cpu')}  user ${m('user')}  sys ${m('sys')}  faults ${m('faults')}   walls ${v.runs.map((x) => Math.round(x.wall)).join(' ')}`,
  );
}
