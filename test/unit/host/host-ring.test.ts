/** The addon's io_uring: requests complete with the kernel's results, in any number, requests handed back unrun run again, and the ring never holds the process. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { HostRing } from '../../../src/host/host-ring.js';
import type { NativeRing } from '../../../src/host/native.js';
import { withDir } from '../../support/temp-dir.js';
import { pageAlignedBytes } from '../../../src/util/page-aligned.js';

const PAGE = 4096;
const noRing = HostRing.open() === null ? 'no io_uring on this host (or the addon is not built)' : false;

/** Page-aligned memory, as O_DIRECT wants. */
function alignedBytes(pages: number): Uint8Array {
  return pageAlignedBytes(pages * PAGE);
}

function openDirect(file: string): number {
  return fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT);
}

function mustOpen(): HostRing {
  const ring = HostRing.open();
  assert.ok(ring);
  return ring;
}

test('O_DIRECT writes, reads and fdatasync through the ring return what the kernel did', { skip: noRing }, withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  fs.writeFileSync(file, Buffer.alloc(16 * PAGE, 0x11));
  const fd = openDirect(file);
  const ring = mustOpen();
  try {
    const mem = alignedBytes(4);
    mem.fill(0x5a, 0, PAGE);
    assert.equal(await ring.write(fd, mem.subarray(0, PAGE), 3 * PAGE), PAGE);
    await ring.datasync(fd);
    assert.equal(await ring.read(fd, mem.subarray(PAGE, 3 * PAGE), 2 * PAGE), 2 * PAGE);
    assert.ok(mem.subarray(PAGE, 2 * PAGE).every((b) => b === 0x11));
    assert.ok(mem.subarray(2 * PAGE, 3 * PAGE).every((b) => b === 0x5a));
    // A read that runs past the end of the file is short, as pread is.
    assert.equal(await ring.read(fd, mem.subarray(0, 2 * PAGE), 15 * PAGE), PAGE);
  } finally {
    await ring.close();
    fs.closeSync(fd);
  }
  const back = fs.readFileSync(file);
  assert.ok(back.subarray(3 * PAGE, 4 * PAGE).every((b) => b === 0x5a));
}));

test('a failed request rejects with the errno name as its code', { skip: noRing }, withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  fs.writeFileSync(file, Buffer.alloc(4 * PAGE));
  const fd = openDirect(file);
  const ring = mustOpen();
  try {
    const mem = alignedBytes(2);
    // O_DIRECT refuses a buffer that is not block aligned.
    await assert.rejects(ring.read(fd, mem.subarray(1, PAGE + 1), 0), { code: 'EINVAL' });
    // A descriptor far above any this process has open.
    await assert.rejects(ring.read(999_999, mem.subarray(0, PAGE), 0), { code: 'EBADF' });
    // The ring still works after failures.
    assert.equal(await ring.read(fd, mem.subarray(0, PAGE), 0), PAGE);
  } finally {
    await ring.close();
    fs.closeSync(fd);
  }
}));

const noPolled = noRing || (HostRing.open({ polled: true }) === null ? 'no io_uring polling thread allowed here' : false);

for (const polling of [false, true]) {
  test(`more requests than the ring holds all complete with the right bytes, and close waits for them${polling ? ' (kernel polling thread)' : ''}`, { skip: polling ? noPolled : noRing }, withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  const blocks = 300;
  const content = Buffer.alloc(blocks * PAGE);
  for (let b = 0; b < blocks; b++) content.fill(b & 0xff, b * PAGE, (b + 1) * PAGE);
  fs.writeFileSync(file, content);
  const fd = openDirect(file);
  const ring = HostRing.open({ polled: polling });
  assert.ok(ring);
  const mem = alignedBytes(blocks);
  const reads: Promise<number>[] = [];
  for (let b = blocks - 1; b >= 0; b--) reads.push(ring.read(fd, mem.subarray(b * PAGE, (b + 1) * PAGE), b * PAGE));
  const closed = ring.close();
  await assert.rejects(ring.read(fd, mem.subarray(0, PAGE), 0), { code: 'EBADF' });
  assert.deepEqual(await Promise.all(reads), new Array<number>(blocks).fill(PAGE));
  await closed;
  fs.closeSync(fd);
  assert.ok(Buffer.from(mem).equals(content));
}));
}

test('an idle ring does not keep the process alive', { skip: noRing }, () => {
  const ringModule = fileURLToPath(new URL('../../../src/host/host-ring.js', import.meta.url));
  const script = `import(${JSON.stringify(ringModule)}).then((m) => { globalThis.r = m.HostRing.open(); console.log(globalThis.r ? 'open' : 'none'); });`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.error, undefined, 'the child process exited on its own');
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), 'open');
});

test('a ring that watches its completion queue completes depth-1 requests with the right bytes, and timers still run meanwhile', { skip: noRing }, withDir(async (dir) => {
  const file = path.join(dir, 'w.raw');
  fs.writeFileSync(file, Buffer.alloc(64 * PAGE));
  const fd = openDirect(file);
  const ring = HostRing.open({ spinMicros: 2000 });
  assert.ok(ring);
  // A timer every millisecond: the watch may delay it by its window and budget, never hold it.
  let ticks = 0;
  let longestGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    longestGap = Math.max(longestGap, now - last);
    last = now;
    ticks++;
  }, 1);
  try {
    const mem = alignedBytes(2);
    const started = performance.now();
    for (let i = 0; i < 400; i++) {
      const at = (i % 64) * PAGE;
      mem.fill(i & 0xff, 0, PAGE);
      assert.equal(await ring.write(fd, mem.subarray(0, PAGE), at), PAGE);
      assert.equal(await ring.read(fd, mem.subarray(PAGE), at), PAGE);
      assert.ok(mem.subarray(PAGE).every((x) => x === (i & 0xff)), `request ${i} read back`);
    }
    const elapsed = performance.now() - started;
    assert.ok(ticks >= Math.min(5, elapsed / 20), `the timer ran ${ticks} times in ${elapsed.toFixed(0)} ms`);
    assert.ok(longestGap < 200, `longest gap between timer runs ${longestGap.toFixed(1)} ms`);
  } finally {
    clearInterval(timer);
    await ring.close();
    fs.closeSync(fd);
  }
}));

test('a ring that may watch its queue measures both ways of waiting at depth 1, and a ring that may not only sleeps', { skip: noRing }, withDir(async (dir) => {
  const file = path.join(dir, 'm.raw');
  fs.writeFileSync(file, Buffer.alloc(16 * PAGE));
  const fd = openDirect(file);
  const ring = HostRing.open({ spinMicros: 200 });
  assert.ok(ring);
  try {
    assert.deepEqual(ring.waits(), { watching: true, watchMicros: null, sleepMicros: null, cooperative: false }, 'it starts watching, nothing measured');
    const mem = alignedBytes(1);
    const seen = new Set<boolean>();
    // Blocks of 32 waits: the first watching, the next sleeping, then the better way with a probe of the other every 9th.
    for (let i = 0; i < 32 * 12; i++) {
      assert.equal(await ring.read(fd, mem, (i % 16) * PAGE), PAGE);
      const w = ring.waits();
      assert.ok(w);
      seen.add(w.watching);
    }
    const w = ring.waits();
    assert.ok(w && w.watchMicros !== null && w.sleepMicros !== null, `both ways measured: ${JSON.stringify(w)}`);
    assert.ok(w.watchMicros > 0 && w.sleepMicros > 0);
    assert.deepEqual([...seen].sort(), [false, true], 'both ways were used');
  } finally {
    await ring.close();
    fs.closeSync(fd);
  }
  const never = HostRing.open({ spinMicros: 0 });
  assert.ok(never);
  try {
    const fd2 = openDirect(file);
    const page = alignedBytes(1);
    try {
      for (let i = 0; i < 100; i++) await never.read(fd2, page, 0);
    } finally {
      fs.closeSync(fd2);
    }
    assert.deepEqual(never.waits(), { watching: false, watchMicros: null, sleepMicros: null, cooperative: false }, 'a ring that never watches measures nothing');
  } finally {
    await never.close();
  }
}));

/** IORING_SETUP_COOP_TASKRUN came with Linux 5.19. */
const kernelCooperates = ((): boolean => {
  const [major = 0, minor = 0] = os.release().split('.').map((x) => parseInt(x, 10));
  return major > 5 || (major === 5 && minor >= 19);
})();

test('a cooperative ring delivers every completion, whether it watches its queue, sleeps, or the JS thread was busy when the request ended', { skip: noRing }, withDir(async (dir) => {
  const file = path.join(dir, 'c.raw');
  fs.writeFileSync(file, Buffer.alloc(64 * PAGE));
  const fd = openDirect(file);
  const ring = HostRing.open({ spinMicros: 200, cooperative: true });
  assert.ok(ring);
  try {
    assert.equal(ring.waits()?.cooperative, kernelCooperates, `cooperative on Linux ${os.release()}`);
    const mem = alignedBytes(2);
    const seen = new Set<boolean>();
    // Depth 1 through blocks of watching and of sleeping (see the test above).
    for (let i = 0; i < 32 * 12; i++) {
      const at = (i % 64) * PAGE;
      mem.fill(i & 0xff, 0, PAGE);
      assert.equal(await ring.write(fd, mem.subarray(0, PAGE), at), PAGE);
      assert.equal(await ring.read(fd, mem.subarray(PAGE), at), PAGE);
      assert.ok(mem.subarray(PAGE).every((x) => x === (i & 0xff)), `request ${i} read back`);
      seen.add(ring.waits()?.watching ?? false);
    }
    assert.deepEqual([...seen].sort(), [false, true], 'both ways of waiting were used');
    // Requests that end while the JS thread runs without a syscall: their work waits for the thread, and nothing is lost.
    const pages = Array.from({ length: 16 }, (_, i) => {
      const page = alignedBytes(1);
      page.fill(0x80 + i);
      return page;
    });
    const writes = pages.map((page, i) => ring.write(fd, page, i * PAGE));
    const until = performance.now() + 20;
    while (performance.now() < until) {
      // busy: no syscall, so no chance for the kernel to run the completions here
    }
    assert.deepEqual(await Promise.all(writes), pages.map(() => PAGE));
    const back = alignedBytes(16);
    assert.equal(await ring.read(fd, back, 0), 16 * PAGE);
    for (let i = 0; i < 16; i++) assert.ok(back.subarray(i * PAGE, (i + 1) * PAGE).every((x) => x === 0x80 + i), `page ${i}`);
  } finally {
    await ring.close();
    fs.closeSync(fd);
  }
}));

/**
 * A stand-in for the addon's ring whose "kernel" answers each request with the
 * result `answer` gives it, without touching the file: what a kernel does when
 * it hands a request back unrun (ECANCELED: io_uring could not start a worker
 * thread; EINTR, EAGAIN), or fails it.
 */
function standInRing(answer: (op: number, index: number) => number, enterError = 0): { native: NativeRing; submitted: number[] } {
  const submitted: number[] = [];
  let results: Int32Array = new Int32Array(0);
  let onComplete: (count: number) => void = () => undefined;
  let queued: number[] = [];
  const native: NativeRing = {
    ringOpen: (_entries, r, cb) => {
      results = r;
      onComplete = cb;
      return {};
    },
    ringSubmit: (_ring, op, _fd, _buf, _offset, tag) => {
      submitted.push(op);
      queued.push(tag, answer(op, submitted.length - 1));
    },
    ringEnter: () => {
      if (enterError !== 0) {
        queued = [];
        return -enterError;
      }
      const done = queued;
      queued = [];
      setImmediate(() => {
        results.set(done);
        onComplete(done.length / 2);
      });
      return done.length / 2;
    },
    ringClose: () => undefined,
  };
  return { native, submitted };
}

test('a request the kernel hands back unrun (ECANCELED, EINTR, EAGAIN) runs again on the thread pool with the right bytes; other errors still fail it', withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  fs.writeFileSync(file, Buffer.alloc(4 * PAGE, 0x11));
  const fd = fs.openSync(file, 'r+');
  const { errno } = osConstants;
  // Write, read, datasync: each handed back once; then a read that fails with EIO.
  const answers = [-errno.ECANCELED, -errno.EINTR, -errno.EAGAIN, -errno.EIO];
  const { native, submitted } = standInRing((_op, i) => answers[i] ?? 0);
  const ring = HostRing.open({ native });
  assert.ok(ring);
  try {
    const data = Buffer.alloc(PAGE, 0x5a);
    assert.equal(await ring.write(fd, data, PAGE), PAGE);
    const back = Buffer.alloc(2 * PAGE);
    assert.equal(await ring.read(fd, back, 0), 2 * PAGE);
    assert.ok(back.subarray(0, PAGE).every((b) => b === 0x11));
    assert.ok(back.subarray(PAGE).every((b) => b === 0x5a), 'the read ran on the pool after the write did');
    await ring.datasync(fd);
    await assert.rejects(ring.read(fd, back, 0), { code: 'EIO' });
    assert.deepEqual(submitted, [1, 0, 2, 0], 'each request went to the ring once');
  } finally {
    await ring.close();
    fs.closeSync(fd);
  }
}));

test('close waits for a request running again on the thread pool', withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  fs.writeFileSync(file, Buffer.alloc(PAGE));
  const fd = fs.openSync(file, 'r+');
  const { native } = standInRing(() => -osConstants.errno.ECANCELED);
  const ring = HostRing.open({ native });
  assert.ok(ring);
  let written = false;
  const write = ring.write(fd, Buffer.alloc(PAGE, 0x77), 0).then((n) => {
    written = true;
    return n;
  });
  await new Promise((r) => setImmediate(r));
  assert.equal(ring.inFlight, 1);
  await ring.close();
  assert.ok(written, 'close settled only after the write');
  assert.equal(await write, PAGE);
  fs.closeSync(fd);
  assert.ok(fs.readFileSync(file).every((b) => b === 0x77));
}));

test('requests dropped by an enter that found no memory (EAGAIN) run on the thread pool; other enter errors fail them', withDir(async (dir) => {
  const file = path.join(dir, 'f.raw');
  fs.writeFileSync(file, Buffer.alloc(2 * PAGE));
  const fd = fs.openSync(file, 'r+');
  try {
    const again = HostRing.open({ native: standInRing(() => 0, osConstants.errno.EAGAIN).native });
    assert.ok(again);
    const writes = [ring2(again, 0, 0x21), ring2(again, PAGE, 0x22)];
    assert.deepEqual(await Promise.all(writes), [PAGE, PAGE]);
    await again.close();
    const back = fs.readFileSync(file);
    assert.ok(back.subarray(0, PAGE).every((b) => b === 0x21) && back.subarray(PAGE).every((b) => b === 0x22));

    const broken = HostRing.open({ native: standInRing(() => 0, osConstants.errno.EBADF).native });
    assert.ok(broken);
    await assert.rejects(ring2(broken, 0, 0x33), { code: 'EBADF' });
    await broken.close();
    assert.ok(fs.readFileSync(file).subarray(0, PAGE).every((b) => b === 0x21), 'the failed write wrote nothing');
  } finally {
    fs.closeSync(fd);
  }

  function ring2(ring: HostRing, at: number, fill: number): Promise<number> {
    return ring.write(fd, Buffer.alloc(PAGE, fill), at);
  }
}));
