#!/usr/bin/env node
// The JS thread's cost per request of the qcow2 write path, without the device: a
// sequential stream of 4 KiB writes at depth 16 (the raw-file-limit row's pattern)
// into a fresh qcow2 on an in-memory host that keeps metadata, drops guest data, and
// completes its writes in batches on setImmediate (as an io_uring's reap does).
// Not a comparison with QEMU: a developer's measure of one layer, for A/B runs of two
// builds (run it from each checkout, alternating). Needs `npm run build` (it uses the
// compiled test helpers).
//
// --depth N: requests in flight (16). --overwrite: the same writes go over clusters a
// first, untimed pass allocated (the depth-1 overwrite row's path: no allocation).
//
//   node bench/write-path-cpu.mjs [--offset N] [--requests N] [--depth N] [--overwrite] [--extended-l2]
import './env.mjs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const value = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? Number(args[i + 1]) : fallback;
};
const offset0 = value('--offset', 0);
const requests = value('--requests', 200_000);
const options = args.includes('--extended-l2') ? { extended_l2: 'on' } : {};

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const { freshImageBytes, openOnHost } = await import(path.join(root, 'dist/test/crash/image-helpers.js'));

const CHUNK = 65536;
const DATA = 4096;

/** A HostFile over a map of 64 KiB chunks; writes of exactly DATA bytes (the guest's) are not kept. */
class SparseBatchHost {
  path = 'write-path-cpu.qcow2';
  readOnly = false;
  #chunks = new Map();
  #size = 0;
  #pending = [];
  #scheduled = false;

  constructor(bytes) {
    this.#put(bytes, 0);
    this.#size = bytes.length;
  }

  #each(length, offset, fn) {
    for (let p = 0; p < length; ) {
      const at = offset + p;
      const k = Math.floor(at / CHUNK);
      const o = at - k * CHUNK;
      const n = Math.min(CHUNK - o, length - p);
      fn(k, o, p, n);
      p += n;
    }
  }

  #put(buf, offset) {
    this.#each(buf.length, offset, (k, o, p, n) => {
      let c = this.#chunks.get(k);
      if (c === undefined) {
        c = new Uint8Array(CHUNK);
        this.#chunks.set(k, c);
      }
      c.set(buf.subarray(p, p + n), o);
    });
  }

  async size() {
    return this.#size;
  }
  async allocatedSize() {
    return this.#size;
  }
  async read(buf, offset) {
    this.#each(buf.length, offset, (k, o, p, n) => {
      const c = this.#chunks.get(k);
      if (c !== undefined) buf.set(c.subarray(o, o + n), p);
      else buf.fill(0, p, p + n);
    });
  }
  write(buf, offset) {
    this.#size = Math.max(this.#size, offset + buf.length);
    if (buf.length !== DATA) this.#put(buf, offset);
    return new Promise((resolve) => {
      this.#pending.push(resolve);
      if (this.#scheduled) return;
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        const done = this.#pending;
        this.#pending = [];
        for (const r of done) r();
      });
    });
  }
  async writev(bufs, offset) {
    let at = offset;
    for (const b of bufs) {
      await this.write(b, at);
      at += b.length;
    }
  }
  async sync() {}
  async truncate(length) {
    this.#size = length;
  }
  async punchHole() {
    return false;
  }
  async zeroRange() {
    return false;
  }
  async allocate() {
    return false;
  }
  async seekData(offset) {
    return offset < this.#size ? offset : null;
  }
  async seekHole() {
    return this.#size;
  }
  async close() {}
}

const depth = value('--depth', 16);
const overwrite = args.includes('--overwrite');
const host = new SparseBatchHost(await freshImageBytes(4 * 2 ** 30, options));
const driver = await openOnHost(host, { readOnly: false });
const data = new Uint8Array(DATA).fill(7);
if (overwrite) await stream();
const started = process.hrtime.bigint();
await stream();
/** The requests, `depth` at a time. */
function stream() {
  return new Promise((resolve, reject) => {
    let next = 0;
    let active = 0;
    const issue = () => {
      while (active < depth && next < requests) {
        const at = offset0 + next++ * DATA;
        active++;
        driver.write(at, data).then(() => {
          active--;
          if (next >= requests && active === 0) resolve();
          else issue();
        }, reject);
      }
    };
    issue();
  });
}
const ms = Number(process.hrtime.bigint() - started) / 1e6;
const stats = driver.stats();
await driver.flush();
await driver.close();
console.log(
  `${requests} ${overwrite ? 'overwrites' : 'writes'} of ${DATA} bytes from ${offset0}, depth ${depth}: ${ms.toFixed(0)} ms, ${((ms * 1000) / requests).toFixed(2)} µs per request ` +
    `(COW cancellations ${stats.cowCancellations}, COW waits ${stats.cowWaits})`,
);
