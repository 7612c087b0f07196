/** The plain ring serves shallow I/O; the polled one opens once many requests are in flight, and both deliver the right bytes. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HostRing } from '../../../src/host/host-ring.js';
import { RingPair } from '../../../src/host/ring-pair.js';
import { withDir } from '../../support/temp-dir.js';
import { pageAlignedBytes } from '../../../src/util/page-aligned.js';

const PAGE = 4096;
const noRing = HostRing.open() === null ? 'no io_uring on this host (or the addon is not built)' : false;
const noPolled = noRing || (HostRing.open({ polled: true }) === null ? 'no io_uring polling thread allowed here' : false);

function withEnv<T>(name: string, value: string | undefined, open: () => T): T {
  const saved = process.env[name];
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
  try {
    return open();
  } finally {
    if (saved === undefined) delete process.env[name];
    else process.env[name] = saved;
  }
}

function withPollMode<T>(mode: string | undefined, open: () => T): T {
  return withEnv('VDISK_RING_SQPOLL', mode, open);
}

/** A file of `blocks` pages, page b filled with b & 0xff, opened O_DIRECT. */
function patterned(dir: string, blocks: number): { fd: number; content: Buffer } {
  const file = path.join(dir, 'f.raw');
  const content = Buffer.alloc(blocks * PAGE);
  for (let b = 0; b < blocks; b++) content.fill(b & 0xff, b * PAGE, (b + 1) * PAGE);
  fs.writeFileSync(file, content);
  return { fd: fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_DIRECT), content };
}

test('one request at a time stays on the plain ring', { skip: noRing }, withDir(async (dir) => {
  const { fd, content } = patterned(dir, 16);
  const pair = withPollMode(undefined, () => RingPair.open());
  assert.ok(pair);
  const mem = pageAlignedBytes(16 * PAGE);
  for (let b = 0; b < 16; b++) assert.equal(await pair.read(fd, mem.subarray(b * PAGE, (b + 1) * PAGE), b * PAGE), PAGE);
  assert.equal(pair.polledOpen, false);
  await pair.close();
  fs.closeSync(fd);
  assert.ok(Buffer.from(mem).equals(content));
}));

test('a deep burst of reads and writes spills onto the polled ring and every request lands', { skip: noPolled }, withDir(async (dir) => {
  const blocks = 200;
  const { fd, content } = patterned(dir, blocks);
  const pair = withPollMode(undefined, () => RingPair.open());
  assert.ok(pair);
  const mem = pageAlignedBytes(blocks * PAGE);
  const reads: Promise<number>[] = [];
  for (let b = 0; b < blocks; b++) reads.push(pair.read(fd, mem.subarray(b * PAGE, (b + 1) * PAGE), b * PAGE));
  assert.deepEqual(await Promise.all(reads), new Array<number>(blocks).fill(PAGE));
  assert.ok(Buffer.from(mem).equals(content));
  assert.equal(pair.polledOpen, true);
  // Writes spread over both rings, then one fdatasync: all of them are in the file.
  const out = pageAlignedBytes(blocks * PAGE).fill(0xa5);
  const writes: Promise<number>[] = [];
  for (let b = 0; b < blocks; b++) writes.push(pair.write(fd, out.subarray(b * PAGE, (b + 1) * PAGE), b * PAGE));
  assert.deepEqual(await Promise.all(writes), new Array<number>(blocks).fill(PAGE));
  await pair.datasync(fd);
  await pair.close();
  fs.closeSync(fd);
  assert.ok(fs.readFileSync(path.join(dir, 'f.raw')).every((b) => b === 0xa5));
}));

test('the plain ring is cooperative unless VDISK_RING_COOP=0, and either way every request lands', { skip: noRing }, withDir(async (dir) => {
  const { fd, content } = patterned(dir, 16);
  try {
    for (const [value, expected] of [[undefined, true], ['1', true], ['0', false]] as const) {
      const pair = withEnv('VDISK_RING_COOP', value, () => RingPair.open());
      assert.ok(pair);
      try {
        // A kernel before 5.19 has no cooperative rings: the pair then says false whatever the variable.
        if (pair.cooperative || !expected) assert.equal(pair.cooperative, expected, `VDISK_RING_COOP=${value ?? '(unset)'}`);
        const mem = pageAlignedBytes(PAGE);
        for (let b = 0; b < 16; b++) {
          assert.equal(await pair.read(fd, mem, b * PAGE), PAGE);
          assert.ok(Buffer.from(mem).equals(content.subarray(b * PAGE, (b + 1) * PAGE)), `page ${b}`);
        }
      } finally {
        await pair.close();
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}));

test('VDISK_RING_SQPOLL=0 never opens the polled ring; =1 uses it from the first request', { skip: noPolled }, withDir(async (dir) => {
  const { fd } = patterned(dir, 64);
  const mem = pageAlignedBytes(64 * PAGE);
  const burst = (pair: RingPair): Promise<number[]> =>
    Promise.all(Array.from({ length: 64 }, (_, b) => pair.read(fd, mem.subarray(b * PAGE, (b + 1) * PAGE), b * PAGE)));
  const never = withPollMode('0', () => RingPair.open());
  assert.ok(never);
  await burst(never);
  assert.equal(never.polledOpen, false);
  await never.close();
  const always = withPollMode('1', () => RingPair.open());
  assert.ok(always);
  assert.equal(await always.read(fd, mem.subarray(0, PAGE), 0), PAGE);
  assert.equal(always.polledOpen, true);
  await always.close();
  fs.closeSync(fd);
}));

test('a ring knob with a value it cannot take is refused, naming the variable and the value', async () => {
  for (const [name, value, expect] of [
    ['VDISK_RING_SPIN_US', 'abc', /VDISK_RING_SPIN_US must be a whole number of microseconds from 0 to 10000, not 'abc'/],
    ['VDISK_RING_SPIN_US', '20000', /not '20000'/],
    ['VDISK_RING_SQPOLL', '2', /VDISK_RING_SQPOLL must be 0 or 1, not '2'/],
    ['VDISK_RING_COOP', 'yes', /VDISK_RING_COOP must be 0 or 1, not 'yes'/],
  ] as const) {
    assert.throws(
      () => withEnv(name, value, () => RingPair.open()),
      (e: unknown) => (e as { code?: string }).code === 'EINVAL' && expect.test((e as Error).message),
    );
  }
  for (const ok of ['0', '150']) {
    const pair = withEnv('VDISK_RING_SPIN_US', ok, () => RingPair.open());
    await pair?.close();
  }
});
