#!/usr/bin/env node
// Block-job benchmark, vdisk vs QEMU in the same run, alternating tools, median of N, ratio = QEMU time /
// vdisk time (higher is better for vdisk):
//  - commit: `vdisk commit` vs `qemu-img commit` of an overlay holding --commit-mib of data (default 1024);
//  - mirror to READY: `vdisk serve --qmp` vs `qemu-storage-daemon`, each freshly started with the source
//    added by blockdev-add (not timed); timed from sending drive-mirror (sync=full, new qcow2 target) to
//    BLOCK_JOB_READY; then job-cancel and quit. Source: --mirror-gib virtual size with --data-mib of data
//    in 64 MiB runs spread evenly (default 2 GiB / 1024 MiB; --full: the 8 GiB / 2048 MiB).
//
//   node bench/jobs.mjs [--runs N] [--commit-mib N] [--mirror-gib N] [--data-mib N] [--full] [--only commit|mirror]
import { execFileSync, spawn } from 'node:child_process';
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
const only = opt('--only', '');
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const vdiskMain = path.join(root, 'dist/src/cli/main.js');
const dir = fs.mkdtempSync(path.join(process.env.VDISK_BENCH_DIR ?? os.tmpdir(), 'vdisk-bench-jobs-'));
const sh = (cmd, argv) => execFileSync(cmd, argv, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;
const fmt = (xs) => xs.map((t) => t.toFixed(2)).join(' ');

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
  const [cmd, argv] = which === 'vdisk' ? [process.execPath, [vdiskMain, 'commit', '-q', '-f', 'qcow2', top]] : ['qemu-img', ['commit', '-q', '-f', 'qcow2', top]];
  const t0 = process.hrtime.bigint();
  sh(cmd, argv);
  const t = seconds(t0);
  sh('qemu-io', ['-f', 'qcow2', '-c', `read -P 0x22 0 ${commitMiB}M`, base]);
  return t;
}

// ---- mirror ----------------------------------------------------------------------------------------

/** A minimal QMP client: line-delimited JSON, replies matched by id, every message kept. */
async function qmpConnect(sock) {
  const socket = net.createConnection(sock);
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
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
      ? [process.execPath, [vdiskMain, 'serve', '--qmp', qmpSock]]
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
  return { stop };
}

function prepareMirrorSource() {
  const src = path.join(dir, 'src.qcow2');
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
    if (ev.event !== 'BLOCK_JOB_READY') throw new Error(`${which}: mirror ended before READY: ${JSON.stringify(ev)}`);
    await qmp.execute('job-cancel', { id: 'm' });
    await qmp.next((m) => m.event === 'JOB_STATUS_CHANGE' && m.data.status === 'null');
    await qmp.execute('quit').catch(() => {});
    return t;
  } finally {
    qmp?.close();
    await daemon.stop();
  }
}

// ---- main ------------------------------------------------------------------------------------------

async function measure(label, once) {
  const times = { vdisk: [], qemu: [] };
  for (let i = 0; i < runs; i++) {
    for (const which of i % 2 === 0 ? ['vdisk', 'qemu'] : ['qemu', 'vdisk']) times[which].push(await once(which));
  }
  const v = median(times.vdisk);
  const q = median(times.qemu);
  console.log(`${label}: vdisk ${v.toFixed(2)} s (${fmt(times.vdisk)})  QEMU ${q.toFixed(2)} s (${fmt(times.qemu)})  ratio QEMU/vdisk ${(q / v).toFixed(2)}x`);
}

try {
  if (only !== 'mirror') await measure(`commit ${commitMiB} MiB (vdisk commit vs qemu-img commit)`, commitOnce);
  if (only !== 'commit') {
    const src = prepareMirrorSource();
    await measure(`drive-mirror ${mirrorGiB} GiB image with ${dataMiB} MiB data to READY (vdisk serve vs qemu-storage-daemon)`, (w) => mirrorOnce(w, src));
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
