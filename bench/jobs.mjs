#!/usr/bin/env node
// Block-job benchmark, vdisk vs QEMU in the same run, alternating tools, median of N, ratio = QEMU time /
// vdisk time (higher is better for vdisk):
//  - commit: `vdisk commit` vs `qemu-img commit` of an overlay holding --commit-mib of data (default 1024);
//  Each row also gives the CPU seconds (user + system) of the tool: the whole command for commit (with GNU
//  time installed), the server process from its start to READY (mirror) or to COMPLETED (converge).
//  - mirror to READY: `vdisk serve --qmp` vs `qemu-storage-daemon`, each freshly started with the source
//    added by blockdev-add (not timed); timed from sending drive-mirror (sync=full, new qcow2 target) to
//    BLOCK_JOB_READY; then job-cancel and quit. Source: --mirror-gib virtual size with --data-mib of data
//    in 64 MiB runs spread evenly (default 2 GiB / 1024 MiB; --full: the 8 GiB / 2048 MiB).
//  - converge: the same mirror while a guest writes steadily through the server's NBD export of the
//    source (nbd-server-start + block-export-add, then fio's nbd engine: 4 KiB random writes over the
//    whole disk at --load-iops, default 500, one in flight; the same fio command for both servers). fio
//    runs 1 s before drive-mirror is sent. Timed: drive-mirror to BLOCK_JOB_READY, and job-complete to
//    BLOCK_JOB_COMPLETED (the pivot under load). The IOPS the guest actually got (over fio's whole run,
//    the second before drive-mirror included) is printed too: a server that starved the guest would
//    converge faster for the wrong reason. Needs fio built with its nbd engine (libnbd).
//
//   node bench/jobs.mjs [--runs N] [--commit-mib N] [--mirror-gib N] [--data-mib N] [--load-iops N] [--full]
//                       [--only commit|mirror|converge]
//   VDISK_NODE_FLAGS='--cpu-prof --cpu-prof-dir=/tmp/prof' node bench/jobs.mjs ...  (flags for vdisk's node)
//   VDISK_MAIN=/elsewhere/bin/vdisk.cjs node bench/jobs.mjs ...  (another vdisk build)
import './env.mjs';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const full = args.includes('--full');
const runs = Number(opt('--runs', 3));
const commitMiB = Number(opt('--commit-mib', 1024));
const mirrorGiB = Number(opt('--mirror-gib', full ? 8 : 2));
const dataMiB = Number(opt('--data-mib', full ? 2048 : 1024));
const loadIops = Number(opt('--load-iops', 500));
const only = opt('--only', '');
if (!['', 'commit', 'mirror', 'converge'].includes(only)) throw new Error(`--only ${only}: expected commit, mirror or converge`);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// VDISK_MAIN: another build's bin/vdisk.cjs or dist/src/cli/main.js (an A/B of two vdisk builds against the same QEMU).
const vdiskMain = process.env.VDISK_MAIN ? path.resolve(process.env.VDISK_MAIN) : path.join(root, 'bin/vdisk.cjs');
const sh = (cmd, argv) => execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const nodeFlags = (process.env.VDISK_NODE_FLAGS ?? '').split(' ').filter(Boolean);
const fmt = (xs) => xs.map((t) => t.toFixed(2)).join(' ');
// CPU seconds (user + system, all threads) a live process has used so far, from /proc (Linux).
const clockTicks = Number(sh('getconf', ['CLK_TCK']).trim()) || 100;
const cpuOf = (pid) => {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
};
// GNU time, where installed, gives a finished command's CPU seconds.
const gnuTime = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : null;
if (only === '' || only === 'converge') {
  let engines = '';
  try {
    engines = sh('fio', ['--enghelp']);
  } catch {
    /* no fio */
  }
  if (!engines.split('\n').some((l) => l.trim() === 'nbd')) throw new Error('converge needs fio with its nbd engine (Debian: apt-get install fio), or use --only commit|mirror');
}
const dir = fs.mkdtempSync(path.join(process.env.VDISK_BENCH_DIR ?? os.tmpdir(), 'vdisk-bench-jobs-'));

// ---- commit ----------------------------------------------------------------------------------------

function prepareCommit() {
  const base = path.join(dir, 'base.qcow2');
  const top = path.join(dir, 'top.qcow2');
  for (const f of [base, top]) fs.rmSync(f, { force: true });
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', base, `${2 * commitMiB}M`]);
  sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x11 0 ${commitMiB}M`, base]);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
  sh('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x22 0 ${commitMiB}M`, top]);
  sh('sync', []);
  return { base, top };
}

function commitOnce(which) {
  const { base, top } = prepareCommit();
  const [cmd, argv] = which === 'vdisk' ? [process.execPath, [...nodeFlags, vdiskMain, 'commit', '-q', '-f', 'qcow2', top]] : ['qemu-img', ['commit', '-q', '-f', 'qcow2', top]];
  const t0 = process.hrtime.bigint();
  let cpu = NaN;
  if (gnuTime) {
    // GNU time reports on stderr, after the command's own stderr.
    const r = spawnSync(gnuTime, ['-f', 'CPU %U %S', cmd, ...argv], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0) throw new Error(`${which} commit failed: ${r.stderr}`);
    const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
    if (m) cpu = Number(m[1]) + Number(m[2]);
  } else {
    sh(cmd, argv);
  }
  const t = seconds(t0);
  sh('qemu-io', ['-f', 'qcow2', '-c', `read -P 0x22 0 ${commitMiB}M`, base]);
  return { time: t, cpu };
}

// ---- mirror ----------------------------------------------------------------------------------------

/** A minimal QMP client: line-delimited JSON, replies matched by id, every message kept. */
async function qmpConnect(sock) {
  // The socket file appears when the server binds it, a moment before it listens: retry a refused connect.
  let socket;
  for (let tries = 0; ; tries++) {
    socket = net.createConnection(sock);
    try {
      await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      break;
    } catch (e) {
      socket.destroy();
      if (e.code !== 'ECONNREFUSED' || tries >= 100) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const messages = [];
  let waiters = [];
  let buf = '';
  socket.on('data', (d) => {
    buf += d.toString();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) messages.push(JSON.parse(line));
    }
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  });
  const next = async (pred) => {
    for (let from = 0; ; ) {
      const i = messages.findIndex((m, k) => k >= from && pred(m));
      if (i >= 0) return messages.splice(i, 1)[0];
      from = messages.length;
      await new Promise((r) => waiters.push(r));
    }
  };
  let n = 0;
  const execute = async (name, a) => {
    const id = `b${n++}`;
    socket.write(JSON.stringify({ execute: name, ...(a ? { arguments: a } : {}), id }) + '\n');
    const reply = await next((m) => m.id === id);
    if (reply.error) throw new Error(`${name}: ${reply.error.desc}`);
    return reply.return;
  };
  await next((m) => 'QMP' in m);
  await execute('qmp_capabilities');
  return { execute, next, close: () => socket.destroy() };
}

async function startDaemon(which, qmpSock) {
  fs.rmSync(qmpSock, { force: true });
  const [cmd, argv] =
    which === 'vdisk'
      ? [process.execPath, [...nodeFlags, vdiskMain, 'serve', '--qmp', qmpSock]]
      : ['qemu-storage-daemon', ['--chardev', `socket,path=${qmpSock},server=on,wait=off,id=qmp0`, '--monitor', 'chardev=qmp0,mode=control']];
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((resolve) => proc.once('exit', resolve));
  for (let i = 0; !fs.existsSync(qmpSock); i++) {
    if (i > 500 || proc.exitCode !== null) throw new Error(`${which} did not start`);
    await new Promise((r) => setTimeout(r, 20));
  }
  const stop = async () => {
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
    if (proc.exitCode === null) proc.kill('SIGTERM');
    await exited;
    clearTimeout(timer);
  };
  return { stop, cpu: () => cpuOf(proc.pid) };
}

function prepareMirrorSource() {
  const src = path.join(dir, 'src.qcow2');
  fs.rmSync(src, { force: true });
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', src, `${mirrorGiB}G`]);
  const runsOf64 = Math.max(1, Math.floor(dataMiB / 64));
  const stride = Math.floor((mirrorGiB * 1024) / runsOf64);
  const cmds = [];
  for (let i = 0; i < runsOf64; i++) cmds.push('-c', `write -P ${1 + (i % 250)} ${i * stride}M 64M`);
  sh('qemu-io', ['-f', 'qcow2', ...cmds, src]);
  sh('sync', []);
  return src;
}

async function mirrorOnce(which, src) {
  const qmpSock = path.join(dir, `${which}-qmp.sock`);
  const target = path.join(dir, 'target.qcow2');
  fs.rmSync(target, { force: true });
  const daemon = await startDaemon(which, qmpSock);
  let qmp;
  try {
    qmp = await qmpConnect(qmpSock);
    await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: { driver: 'file', filename: src } });
    const t0 = process.hrtime.bigint();
    await qmp.execute('drive-mirror', { device: 'src', 'job-id': 'm', target, format: 'qcow2', sync: 'full' });
    const ev = await qmp.next((m) => m.event === 'BLOCK_JOB_READY' || m.event === 'BLOCK_JOB_COMPLETED');
    const t = seconds(t0);
    const cpu = daemon.cpu();
    if (ev.event !== 'BLOCK_JOB_READY') throw new Error(`${which}: mirror ended before READY: ${JSON.stringify(ev)}`);
    await qmp.execute('job-cancel', { id: 'm' });
    await qmp.next((m) => m.event === 'JOB_STATUS_CHANGE' && m.data.status === 'null');
    await qmp.execute('quit').catch(() => {});
    return { ready: t, cpu };
  } finally {
    qmp?.close();
    await daemon.stop();
  }
}

// ---- mirror convergence under a guest write load --------------------------------------------------

/** fio writing 4 KiB at random offsets through an NBD URI at a fixed rate until stopped; resolves to its JSON report. */
function startLoad(uri) {
  const argv = ['--name=guest', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=1', `--rate_iops=${loadIops}`];
  argv.push('--time_based', '--runtime=3600', '--randrepeat=0', '--output-format=json');
  const proc = spawn('fio', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (err += d));
  const done = new Promise((resolve, reject) =>
    proc.once('exit', (code, signal) => {
      const i = out.indexOf('{');
      if (i < 0) return reject(new Error(`fio exited (${code ?? signal}) without a report: ${err.trim()}`));
      resolve(JSON.parse(out.slice(i)));
    }),
  );
  // SIGINT: fio stops and still prints its report.
  return { exited: () => proc.exitCode !== null || proc.signalCode !== null, stop: () => (proc.kill('SIGINT'), done), kill: () => proc.kill('SIGKILL') };
}

async function convergeOnce(which, src) {
  const qmpSock = path.join(dir, `${which}-qmp.sock`);
  const nbdSock = path.join(dir, `${which}-nbd.sock`);
  const target = path.join(dir, 'target.qcow2');
  for (const f of [target, nbdSock]) fs.rmSync(f, { force: true });
  const daemon = await startDaemon(which, qmpSock);
  let qmp;
  let load;
  try {
    qmp = await qmpConnect(qmpSock);
    await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'src', file: { driver: 'file', filename: src } });
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdSock } } });
    await qmp.execute('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'src', name: 'src', writable: true });
    load = startLoad(`nbd+unix:///src?socket=${nbdSock}`);
    await new Promise((r) => setTimeout(r, 1000));
    if (load.exited()) throw new Error(`${which}: fio stopped early: ${JSON.stringify(await load.stop())}`);
    const t0 = process.hrtime.bigint();
    await qmp.execute('drive-mirror', { device: 'src', 'job-id': 'm', target, format: 'qcow2', sync: 'full' });
    const ready = await qmp.next((m) => m.event === 'BLOCK_JOB_READY' || m.event === 'BLOCK_JOB_COMPLETED');
    const tReady = seconds(t0);
    if (ready.event !== 'BLOCK_JOB_READY') throw new Error(`${which}: mirror ended before READY: ${JSON.stringify(ready)}`);
    const t1 = process.hrtime.bigint();
    await qmp.execute('job-complete', { id: 'm' });
    const completed = await qmp.next((m) => m.event === 'BLOCK_JOB_COMPLETED');
    const tComplete = seconds(t1);
    const cpu = daemon.cpu();
    if (completed.data.error) throw new Error(`${which}: mirror failed: ${completed.data.error}`);
    const report = await load.stop();
    load = null;
    // fio's iops cover its whole run (1 s before the job, and the job): close enough to compare servers.
    const iops = report.jobs[0].write.iops;
    const errors = report.jobs[0].error;
    if (errors) throw new Error(`${which}: fio failed with error ${errors}`);
    await qmp.execute('quit').catch(() => {});
    return { ready: tReady, complete: tComplete, cpu, iops };
  } finally {
    load?.kill();
    qmp?.close();
    await daemon.stop();
  }
}

// ---- main ------------------------------------------------------------------------------------------

/** Runs `once` alternating tools; it returns seconds, or an object of named figures (seconds unless named in `plain`). */
async function measure(label, once, plain = []) {
  const results = { vdisk: [], qemu: [] };
  for (let i = 0; i < runs; i++) {
    for (const which of i % 2 === 0 ? ['vdisk', 'qemu'] : ['qemu', 'vdisk']) results[which].push(await once(which));
  }
  const keys = typeof results.vdisk[0] === 'number' ? [null] : Object.keys(results.vdisk[0]);
  for (const key of keys) {
    const pick = (which) => results[which].map((r) => (key === null ? r : r[key]));
    const v = median(pick('vdisk'));
    const q = median(pick('qemu'));
    const name = key === null ? label : `${label} [${key}]`;
    if (plain.includes(key)) console.log(`${name}: vdisk ${v.toFixed(0)} (${pick('vdisk').map((x) => x.toFixed(0)).join(' ')})  QEMU ${q.toFixed(0)} (${pick('qemu').map((x) => x.toFixed(0)).join(' ')})`);
    else console.log(`${name}: vdisk ${v.toFixed(2)} s (${fmt(pick('vdisk'))})  QEMU ${q.toFixed(2)} s (${fmt(pick('qemu'))})  ratio QEMU/vdisk ${(q / v).toFixed(2)}x`);
  }
}

try {
  if (only === '' || only === 'commit') await measure(`commit ${commitMiB} MiB (vdisk commit vs qemu-img commit)`, commitOnce);
  if (only === '' || only === 'mirror') {
    const src = prepareMirrorSource();
    await measure(`drive-mirror ${mirrorGiB} GiB image with ${dataMiB} MiB data to READY (vdisk serve vs qemu-storage-daemon)`, (w) => mirrorOnce(w, src));
  }
  if (only === '' || only === 'converge') {
    // A fresh source per run: the load's writes of one run must not become the next run's data.
    await measure(`drive-mirror ${mirrorGiB} GiB / ${dataMiB} MiB data under ${loadIops} IOPS of 4 KiB random guest writes`, (w) => convergeOnce(w, prepareMirrorSource()), ['iops']);
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
