// How long the disk under the scratch directory stalled during each timed command: time
// in which it was busy the whole while with two requests or more waiting, yet completed
// almost nothing (under 4 MB/s). On the 2 vCPU VMs these numbers come from, the virtual
// disk stops for 0.3-0.5 s at a time, whichever tool writes (/proc/diskstats sampled
// every 50 ms during depth-16 streams of 4 KiB writes, raw and qcow2 alike), most often
// about 2 s after a few GiB of page cache were freed (the free page reporting described
// in run.mjs); a run that meets such a stall is slower by about that much. The suite
// prints these next to the runs so a ratio moved by the device can be told apart from
// one moved by a tool. A lower bound: windows where one request or none was in flight
// are not counted, since a command's own fdatasync at its end (a cache flush, then the
// journal's commit block written with FUA: ~0.1 s here) looks the same with one.
//
// A worker thread samples /proc/diskstats every SAMPLE_MS into shared memory, so the
// suite's synchronous child processes do not stop it; `begin`/`end` bracket a command.
import * as fs from 'node:fs';
import { Worker } from 'node:worker_threads';

const SAMPLE_MS = 20;
/** Samples kept: a ring of about 22 minutes at SAMPLE_MS; one command never runs that long. */
const SLOTS = 1 << 16;
/** Per sample: time (ms), sectors read and written, ms the device was busy, requests in flight, ms spent flushing. */
const FIELDS = 5;
/** A busy window that moved less than this many bytes per ms (4 MB/s) counts as stalled. */
const STALL_BYTES_PER_MS = 4000;

/** major:minor of the device holding `dir`, as /proc/diskstats names it; null on a virtual file system. */
function deviceOf(dir) {
  const dev = fs.statSync(dir).dev;
  // Linux's encoding of dev_t (as glibc's gnu_dev_major/minor), for the values below 2^32 it takes here.
  const major = ((dev >>> 8) & 0xfff) >>> 0;
  const minor = ((dev & 0xff) | ((dev >>> 12) & 0xfff00)) >>> 0;
  if (major === 0) return null; // tmpfs, overlay: no disk to watch
  return { major, minor };
}

const SAMPLER = `
const { workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { shared, major, minor, interval, slots, fields } = workerData;
const head = new Int32Array(shared, 0, 2);
const samples = new Float64Array(shared, 8, slots * fields);
const buf = Buffer.alloc(1 << 16);
const key = ' ' + major + ' ' + minor + ' ';
function sample() {
  let n = 0;
  try {
    const fd = fs.openSync('/proc/diskstats', 'r');
    try { n = fs.readSync(fd, buf, 0, buf.length, 0); } finally { fs.closeSync(fd); }
  } catch { return; }
  const text = buf.toString('latin1', 0, n);
  for (const line of text.split('\\n')) {
    const f = line.trim().split(/\\s+/);
    if (Number(f[0]) !== major || Number(f[1]) !== minor) continue;
    const count = Atomics.load(head, 0);
    const at = (count % slots) * fields;
    samples[at] = performance.timeOrigin + performance.now();
    samples[at + 1] = Number(f[5]) + Number(f[9]);
    samples[at + 2] = Number(f[12]);
    samples[at + 3] = Number(f[11]);
    samples[at + 4] = Number(f[19] ?? 0);
    Atomics.store(head, 0, count + 1);
    return;
  }
}
sample();
setInterval(sample, interval);
`;

export class DeviceStalls {
  #samples;
  #head;
  #worker;
  #begun = 0;
  /** Stalled milliseconds of the last command bracketed by begin/end. */
  last = 0;

  /** A sampler of the disk under `dir`, or null where there is none to watch (no /proc/diskstats, tmpfs). */
  static open(dir) {
    let dev;
    try {
      dev = deviceOf(dir);
      fs.accessSync('/proc/diskstats', fs.constants.R_OK);
    } catch {
      return null;
    }
    return dev === null ? null : new DeviceStalls(dev);
  }

  constructor({ major, minor }) {
    const shared = new SharedArrayBuffer(8 + SLOTS * FIELDS * 8);
    this.#head = new Int32Array(shared, 0, 2);
    this.#samples = new Float64Array(shared, 8, SLOTS * FIELDS);
    this.#worker = new Worker(SAMPLER, { eval: true, workerData: { shared, major, minor, interval: SAMPLE_MS, slots: SLOTS, fields: FIELDS } });
    // A sampler must not keep the suite alive, nor stop it by failing.
    this.#worker.unref();
    this.#worker.on('error', () => undefined);
  }

  begin() {
    this.#begun = performance.timeOrigin + performance.now();
  }

  end() {
    this.last = this.#stalledSince(this.#begun, performance.timeOrigin + performance.now());
  }

  #stalledSince(from, to) {
    const count = Atomics.load(this.#head, 0);
    let stalled = 0;
    // Walk back over the windows between consecutive samples that end inside [from, to].
    for (let k = count - 1; k >= 1 && k > count - SLOTS; k--) {
      const b = (k % SLOTS) * FIELDS;
      const a = ((k - 1) % SLOTS) * FIELDS;
      const s = this.#samples;
      if (s[a] < from) break;
      if (s[b] > to) continue;
      const ms = s[b] - s[a];
      // Two requests or more waiting: a command's fdatasync at its end is one at a time (see the top).
      const busy = s[b + 2] - s[a + 2] >= 0.8 * ms && s[a + 3] > 1 && s[b + 3] > 1;
      const flushing = s[b + 4] - s[a + 4] > 0;
      if (busy && !flushing && (s[b + 1] - s[a + 1]) * 512 < STALL_BYTES_PER_MS * ms) stalled += ms;
    }
    return Math.round(stalled);
  }
}
