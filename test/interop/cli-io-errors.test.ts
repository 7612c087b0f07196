import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { normalised, qcow2Available, qemu, tempDir, vdisk, type ToolResult } from './cli-oracle.js';

/**
 * Bad options and arguments, one command line at a time, through qemu-io 7.2
 * and `vdisk io` on identical copies of one image: stdout, stderr (with the
 * program name replaced) and the exit status must be the same.
 */

/** Lines that go wrong (or are refused) in every way qemu-io checks, per command. */
const BAD_LINES: readonly string[] = [
  'read', 'read 0', 'read 0 1 2', 'read -x 0 1', 'read -P', 'read -P 1', 'read -P x 0 1', 'read -P 256 0 1', 'read -P -1 0 1', 'read 0 -1',
  'read -1 1', 'read x 1', 'read 0 x', 'read 0 1k1', 'read 0 3G', 'read 0 99999999999999999999', 'read 1M 1', 'read 1048575 2', 'read 1 512',
  'read -s 1 0 5', 'read -l 1 0 5', 'read -P 1 -s 6 0 5', 'read -P 0 -s x 0 5', 'read -P 0 -l x 0 5', 'read -P 0 -l 6 0 5', 'read -b 0 512',
  'read -b 1 512', 'read -b 0 511', 'read -p 0 512', 'read -a 0 512', 'read -q 0 512',
  'r -x', 'r 0',
  'write', 'write 0', 'write -x 0 1', 'write -P', 'write -P x 0 1', 'write 0 -1', 'write x 1', 'write 0 x', 'write 0 3G', 'write -z 0 3G',
  'write -n -z 0 3G', 'write -s', 'write -s nofile 0 1', 'write -s /dev/null 0 1', 'write -b 0 512', 'write -b 1 512', 'write -b -z 0 1',
  'write -c 1 512', 'write -c 0 511', 'write -f -b 0 1', 'write -f -c 0 512', 'write -n 0 4k', 'write -u 0 4k', 'write -z -P 1 0 4k',
  'write -s f -P 1 0 1', 'write -z -s f 0 1', 'write 1M 1', 'write 1048575 2', 'write -p 0 1',
  'w -x',
  'readv', 'readv 0', 'readv -x 0 1', 'readv -P x 0 1', 'readv 0 x', 'readv x 1', 'readv 0 3G', 'readv 0 1G 1G 1G', 'readv 1M 1', 'readv 0 512 x',
  'writev', 'writev 0', 'writev -z 0 1', 'writev -P x 0 1', 'writev 0 x', 'writev 1M 1', 'writev 0 3G', 'writev 0 1G 1G 1G',
  'aio_read', 'aio_read 0', 'aio_read -x 0 1', 'aio_read -P x 0 1', 'aio_read 0 x', 'aio_read 1M 512', 'aio_read -i 0 512', 'aio_read -i 0',
  'aio_read -i x 1', 'aio_read -P 1 -i 0 1', 'aio_read -P 1 0 512', 'aio_read -q -P 1 0 512', 'aio_read 0 3G',
  'aio_write', 'aio_write 0', 'aio_write -x 0 1', 'aio_write -P x 0 1', 'aio_write 0 x', 'aio_write 1M 512', 'aio_write -i 0 512',
  'aio_write -i -P x 0 1', 'aio_write -u 0 1', 'aio_write -z 0 1 1', 'aio_write -z 0 3G', 'aio_write -z 1M 1', 'aio_write -z -P 1 0 1',
  'aio_write -z -P x 0 1',
  'aio_flush x',
  'flush x',
  'f x',
  'discard', 'discard 0', 'discard -x 0 1', 'discard 0 x', 'discard x 0', 'discard 1M 1', 'discard 0 3G', 'discard 0 -1', 'discard 0 1 2',
  'd -x',
  'alloc', 'alloc x', 'alloc 0 x', 'alloc 1M', 'alloc 2M', 'alloc 0 0', 'alloc -1', 'alloc 0 1 2', 'alloc 0 3G',
  'a x',
  'map x',
  'truncate', 'truncate -m', 'truncate -x 1', 'truncate x', 'truncate 0x', 'truncate -m bogus 1M', 'truncate -m full x', 'truncate -m falloc 4k',
  'truncate -m metadata 4k', 'truncate 1k 2',
  't x',
  'length x',
  'l x',
  'info x',
  'i x',
  'sleep', 'sleep x', 'sleep -1', 'sleep 1x', 'sleep 1 2',
  'sigraise', 'sigraise x', 'sigraise 100', 'sigraise 1k', 'sigraise 0', 'sigraise 1 2',
  'break', 'break a', 'break a b',
  'remove_break', 'remove_break x',
  'resume x',
  'help a b', 'help bogus',
  'quit x',
  'close x',
  'abort x',
  'reopen -x', 'reopen -c', 'reopen -c bogus', 'reopen -r -w', 'reopen x',
  'open', 'open x',
  'bogus',
];

/** Options act in order: what goes wrong first is reported, and aio -i ends the line where it stands. */
const ORDER_LINES: readonly string[] = [
  'read -P x -y 0 1', 'read -y -P x 0 1', 'read -s x -P 1 0 1', 'write -P x -s', 'aio_read -i -x 0 1', 'aio_read -x -i 0 1', 'aio_write -P 1 -i -P x 0 1',
];

/** What qcow2 answers differently (compression alignment, preallocation on shrink). */
const QCOW2_LINES: readonly string[] = [
  'write -c 0 64k', 'write -c 0 4k', 'write -c 512 4k', 'write -c 1 512', 'truncate -m full 2M', 'truncate -m metadata 2M',
  'truncate -m falloc 512k', 'truncate -m metadata 4k', 'truncate 512k', 'alloc 0 3G', 'discard 0 3G', 'aio_write -z 1M 1',
];

/** Without an image: the commands qemu-io runs anyway, and the refusals of those it does not. */
const NO_IMAGE_LINES: readonly string[] = [
  'sleep x', 'sleep 1 2', 'sigraise x', 'sigraise 100', 'sigraise 0', 'help bogus', 'help a b', 'read 0 1', 'write -x', 'map', 'close',
  'reopen -r', 'break a b', 'open', 'open -x', 'open -f raw x', 'open -o', 'open -t bogus x', 'open -d bogus x', 'open -i bogus x', 'open a b',
  'open -t bogus -x x', 'open -x -t bogus x', 'reopen -c bogus -x',
];

interface Image {
  readonly format: 'raw' | 'qcow2';
  readonly name: string;
}

/** Runs each line on fresh copies of `image` and returns every line whose results differ. */
async function mismatches(image: Image | undefined, lines: readonly string[]): Promise<string[]> {
  const t = tempDir();
  const differ: string[] = [];
  try {
    const q = join(t.dir, 'q');
    const v = join(t.dir, 'v');
    mkdirSync(q);
    mkdirSync(v);
    if (image) qemu('qemu-img', t.dir, ['create', '-q', '-f', image.format, image.name, '1M']);
    for (const line of lines) {
      const args = image ? ['-f', image.format, '-c', line, image.name] : ['-c', line];
      if (image) {
        copyFileSync(join(t.dir, image.name), join(q, image.name));
        copyFileSync(join(t.dir, image.name), join(v, image.name));
      }
      const expected: ToolResult = normalised(qemu('qemu-io', q, args));
      const actual: ToolResult = normalised(await vdisk(v, ['io', ...args]));
      try {
        assert.deepEqual(actual, expected);
      } catch {
        differ.push(`${line}\n  qemu-io: ${JSON.stringify(expected)}\n  vdisk:   ${JSON.stringify(actual)}`);
      }
    }
  } finally {
    t.cleanup();
  }
  return differ;
}

test('io: bad options and arguments of every command on a raw image give qemu-io 7.2 messages and status', async () => {
  assert.deepEqual(await mismatches({ format: 'raw', name: 'd.img' }, [...BAD_LINES, ...ORDER_LINES]), []);
});

test('io: the same lines on a qcow2 image, plus what qcow2 refuses in its own words', async (t) => {
  if (!(await qcow2Available())) return t.skip('qcow2 driver not present');
  // qcow2 keeps VM state past the guest range and qemu-io's -b reaches it; vdisk has no VM state area, so an aligned -b differs.
  const lines = BAD_LINES.filter((l) => !['read -b 0 512', 'write -b 0 512'].includes(l));
  assert.deepEqual(await mismatches({ format: 'qcow2', name: 'd.qcow2' }, [...lines, ...QCOW2_LINES]), []);
});

test('io: commands given without an image', async () => {
  assert.deepEqual(await mismatches(undefined, NO_IMAGE_LINES), []);
});

/** Every command name and alias qemu-io 7.2 has, for `help NAME`. */
const HELP_NAMES: readonly string[] = [
  'abort', 'aio_flush', 'aio_read', 'aio_write', 'alloc', 'break', 'close', 'discard', 'flush', 'help', 'info', 'length', 'map', 'open',
  'quit', 'read', 'readv', 'remove_break', 'reopen', 'resume', 'sigraise', 'sleep', 'truncate', 'wait_break', 'write', 'writev',
  'r', 'w', 'q', '?', 'f', 't', 'l', 'i', 'd', 'a', 'nosuch',
];

test('io: help lists every command in qemu-io 7.2 order, with and without an image, and help NAME for each', async () => {
  assert.deepEqual(await mismatches(undefined, ['help', '?', ...HELP_NAMES.map((n) => `help ${n}`)]), []);
  assert.deepEqual(await mismatches({ format: 'raw', name: 'd.img' }, ['help']), []);
});

/** qemu-io's own command line, where its help names it and ends with QEMU's bug-report trailer. */
function sameUsage(r: ToolResult): ToolResult {
  const stdout = r.stdout
    .replace(/\nSee <https:\/\/qemu\.org\/contribute\/report-a-bug>[^]*$/, '')
    .replace(/^Usage: qemu-io /m, 'Usage: vdisk io ')
    .replace("See 'qemu-io -c help'", "See 'vdisk io -c help'");
  return { ...r, stdout };
}

test('io: bad options and arguments of the command line itself print glibc complaint and the help, as qemu-io does', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'd.img', '1M']);
    const lines: ReadonlyArray<readonly string[]> = [
      ['-x'], ['d.img', 'e.img'], ['-c'], ['-f'], ['--bogus'], ['--cmd'], ['--snapshot=1'], ['--c'], ['--format'], ['-h'], ['--help'], ['--he'],
      ['-t', 'bogus', 'd.img'], ['-d', 'bogus', 'd.img'], ['-i', 'bogus', 'd.img'], ['-k', '-f', 'raw', 'd.img'], ['-f', 'bogus', 'd.img'],
      ['-c', 'length', '-U', 'd.img'], ['-q', '-c', 'length', 'd.img'], ['--quiet', 'd.img'], ['-s', '-U', '-f', 'raw', '-c', 'write 0 1', '-c', 'map', 'd.img'],
      ['-C', '-r', '-f', 'raw', '-c', 'length', 'd.img'],
      ...['driver=raw,file.filename=d.img', 'driver=raw,file.driver=file,file.filename=d.img', 'd.img', 'driver=qcow2,file.filename=d.img',
        'file.filename=d.img', 'filename=d.img', 'driver=raw,filename=d.img', 'driver=raw,file.filename=nosuch', 'driver=raw,file.filename=d.img,bogus=1',
        'driver=raw,file.filename=d.img,read-only=on', 'driver=bogus,file.filename=d.img'].map((o) => ['--image-opts', '-c', 'length', o]),
      ['--image-opts', '-f', 'raw', '-c', 'length', 'driver=raw,file.filename=d.img'],
    ];
    for (const argv of lines) {
      const expected = sameUsage(normalised(qemu('qemu-io', t.dir, argv)));
      const actual = normalised(await vdisk(t.dir, ['io', ...argv]));
      assert.deepEqual(actual, expected, argv.join(' '));
    }
  } finally {
    t.cleanup();
  }
});

test('io: sigraise ends the program with the signal qemu-io dies of, or goes on where qemu-io handles the signal', () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'd.img', '1M']);
    const vdiskMain = resolve('bin/vdisk.cjs');
    for (const sig of ['15', '2', '1', '10', '14', '29', '7', '65']) {
      const args = ['-f', 'raw', '-c', `sigraise ${sig}`, '-c', 'length', 'd.img'];
      const q = spawnSync('qemu-io', args, { cwd: t.dir, encoding: 'utf8' });
      const v = spawnSync(process.execPath, [vdiskMain, 'io', ...args], { cwd: t.dir, encoding: 'utf8' });
      assert.deepEqual({ stdout: v.stdout, stderr: v.stderr, status: v.status, signal: v.signal }, { stdout: q.stdout, stderr: q.stderr, status: q.status, signal: q.signal }, `sigraise ${sig}`);
    }
  } finally {
    t.cleanup();
  }
});
