import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../src/cli/program.js';
import { normalise, normalised, qcow2Available, qemu, tempDir, vdisk, type ToolResult } from './cli-oracle.js';

/** qemu-io with no file, reading `script` from stdin. */
function qemuIoSession(cwd: string, script: readonly string[], argv: readonly string[] = []): ToolResult {
  const r = spawnSync('qemu-io', argv, { cwd, encoding: 'utf8', input: script.map((l) => `${l}\n`).join('') });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status ?? (r.signal === 'SIGABRT' ? 134 : -1) };
}

/** vdisk io with the same lines as its stdin. */
async function vdiskIoSession(cwd: string, script: readonly string[], argv: readonly string[] = []): Promise<ToolResult> {
  let stdout = '';
  let stderr = '';
  const saved = process.cwd();
  process.chdir(cwd);
  try {
    const status = await run(['io', ...argv], {
      out: { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) },
      stdinLines: async function* () {
        yield* script;
      },
    });
    return { stdout, stderr, status };
  } finally {
    process.chdir(saved);
  }
}

function sameAsQemuIo(q: ToolResult, v: ToolResult): void {
  const n = (r: ToolResult): ToolResult => ({ stdout: normalise(r.stdout).replace(/qemu-io> /g, 'vdisk> '), stderr: normalise(r.stderr), status: r.status });
  assert.deepEqual(n(v), n(q));
}

test('io without a file: open, read, close, and the errors before and after, as qemu-io prints them', async (ctx) => {
  if (!(await qcow2Available())) return ctx.skip('qcow2 driver not present');
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'x.qcow2', '1M']);
    qemu('qemu-io', t.dir, ['-c', 'write -P 9 0 4k', 'x.qcow2']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    const script = [
      'read 0 512', 'open -f qcow2 x.qcow2', 'open', 'open -o driver=qcow2 x.qcow2', 'open x.qcow2',
      'read -P 9 0 4k', 'length', 'close', 'close', 'read 0 1', 'sleep 1', 'open -n nosuch', 'open -t bogus r.img',
      'open -d bad r.img', 'open -o driver=raw,bogus=1 r.img', 'open -r r.img', 'write 0 1', 'close',
      'open -U r.img', 'open -n -t writeback -o driver=raw r.img', 'write -P 3 0 1', 'close', 'help close', 'help open', 'quit',
    ];
    const q = qemuIoSession(t.dir, script);
    const v = await vdiskIoSession(t.dir, script);
    sameAsQemuIo(q, v);
  } finally {
    t.cleanup();
  }
});

test('io reopen switches between read-only and read-write and checks its options as qemu-io does', async (ctx) => {
  if (!(await qcow2Available())) return ctx.skip('qcow2 driver not present');
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'x.qcow2', '1M']);
    const script = [
      'reopen -r', 'write -P 1 0 1k', 'reopen -w', 'write -P 2 0 1k', 'reopen -c bogus', 'reopen -r -w', 'reopen -x',
      'reopen extra', 'reopen -c none -o lazy-refcounts=on', 'read -P 2 0 1k', 'help reopen',
      'reopen -o bogus=1', 'reopen -o foo', 'reopen -o driver=raw', 'reopen -o driver=qcow2', 'reopen -o cache.direct=on', 'reopen -o lazy-refcounts=off,bogus=2',
      'reopen -o nolazy-refcounts', 'reopen -c bogus -x', 'write -P 3 0 1', 'read -P 3 0 1', 'quit',
    ];
    const q = qemuIoSession(t.dir, script, ['-f', 'qcow2', 'x.qcow2']);
    const v = await vdiskIoSession(t.dir, script, ['-f', 'qcow2', 'x.qcow2']);
    sameAsQemuIo(q, v);
    assert.equal(qemu('qemu-img', t.dir, ['check', '-q', 'x.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});

test('io abort ends the session at once with the status of a SIGABRT crash', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    const script = ['open -o driver=raw r.img', 'abort', 'read 0 1'];
    const q = qemuIoSession(t.dir, script);
    const v = await vdiskIoSession(t.dir, script);
    sameAsQemuIo(q, v);
    assert.equal(v.status, 134);
  } finally {
    t.cleanup();
  }
});

/** The overlay's random name ("vl." and six characters) is the one thing that may differ. */
function sameOverlayNames(r: ToolResult): ToolResult {
  return { ...r, stderr: r.stderr.replace(/\/vl\.[A-Za-z0-9]{6}'/g, "/vl.XXXXXX'") };
}

/** Runs `body` with $TMPDIR pointing at `dir` (where both tools put -s overlays), restoring it afterwards. */
async function withTmpdir<T>(dir: string, body: () => Promise<T>): Promise<T> {
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  try {
    return await body();
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
}

test('io open -s writes to a temporary overlay: reads see the writes, the image is never written, nothing is left behind', async (ctx) => {
  if (!(await qcow2Available())) return ctx.skip('qcow2 driver not present');
  const t = tempDir();
  try {
    const q = join(t.dir, 'q');
    const v = join(t.dir, 'v');
    const tmp = join(t.dir, 'tmp');
    for (const d of [q, v, tmp]) mkdirSync(d);
    qemu('qemu-img', q, ['create', '-q', '-f', 'qcow2', 'x.qcow2', '1M']);
    qemu('qemu-io', q, ['-c', 'write -P 9 0 64k', 'x.qcow2']);
    qemu('qemu-img', q, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    for (const name of ['x.qcow2', 'r.img']) copyFileSync(join(q, name), join(v, name));
    const before = readFileSync(join(q, 'x.qcow2'));
    const script = [
      'open -s x.qcow2', 'read -P 9 0 64k', 'write -P 5 0 4k', 'read -P 5 0 4k', 'read -P 9 4k 60k', 'map', 'alloc 0 128k', 'info', 'length',
      'reopen', 'reopen -w', 'write -P 6 8k 1', 'close',
      'open x.qcow2', 'read -P 9 0 64k', 'close',
      'open -s r.img', 'write -P 1 0 512', 'read -P 1 0 512', 'truncate 2M', 'length', 'close', 'open -o driver=raw r.img', 'read -P 0 0 512', 'length', 'close',
      'open -s -r -o driver=raw r.img', 'write 0 1', 'read 0 1', 'info', 'close', 'open -s -o driver=raw,bogus=1 r.img', 'quit',
    ];
    const qr = await withTmpdir(tmp, async () => qemuIoSession(q, script));
    const vr = await withTmpdir(tmp, () => vdiskIoSession(v, script));
    sameAsQemuIo(sameOverlayNames(qr), sameOverlayNames(vr));
    assert.deepEqual(readFileSync(join(v, 'x.qcow2')), before, 'the image under -s was written');
    assert.deepEqual(readdirSync(tmp), [], 'an overlay was left behind');
  } finally {
    t.cleanup();
  }
});

test('io -s on the command line: the session writes to an overlay and the image is unchanged afterwards', async (ctx) => {
  if (!(await qcow2Available())) return ctx.skip('qcow2 driver not present');
  const t = tempDir();
  try {
    const q = join(t.dir, 'q');
    const v = join(t.dir, 'v');
    const tmp = join(t.dir, 'tmp');
    for (const d of [q, v, tmp]) mkdirSync(d);
    qemu('qemu-img', q, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    copyFileSync(join(q, 'r.img'), join(v, 'r.img'));
    for (const options of [['-s'], ['--snapshot', '-f', 'raw'], ['-s', '-r', '-f', 'raw']]) {
      const args = [...options, '-c', 'write -P 3 0 4k', '-c', 'read -P 3 0 4k', '-c', 'info', '-c', 'map', 'r.img'];
      const qr = await withTmpdir(tmp, async () => qemu('qemu-io', q, args));
      const vr = await withTmpdir(tmp, () => vdisk(v, ['io', ...args]));
      assert.deepEqual(normalised(vr), normalised(qr), options.join(' '));
      assert.ok(readFileSync(join(v, 'r.img')).every((b) => b === 0), `the image under ${options.join(' ')} was written`);
    }
    assert.deepEqual(readdirSync(tmp), []);
  } finally {
    t.cleanup();
  }
});

test('io -C copies what reads find outside the top image into it, whole clusters, as qemu-io does', async (ctx) => {
  if (!(await qcow2Available())) return ctx.skip('qcow2 driver not present');
  const t = tempDir();
  try {
    const q = join(t.dir, 'q');
    const v = join(t.dir, 'v');
    for (const d of [q, v]) mkdirSync(d);
    qemu('qemu-img', q, ['create', '-q', '-f', 'qcow2', 'b.qcow2', '1M']);
    qemu('qemu-io', q, ['-c', 'write -P 1 0 256k', 'b.qcow2']);
    qemu('qemu-img', q, ['create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', 'o.qcow2']);
    for (const name of ['b.qcow2', 'o.qcow2']) copyFileSync(join(q, name), join(v, name));
    const args = ['-C', '-c', 'read -P 1 1000 1', '-c', 'write -P 2 70k 1k', '-c', 'read 64k 64k', '-c', 'readv 200k 1k 1k', '-c', 'aio_read 300k 1',
      '-c', 'aio_flush', '-c', 'read 512k 4k', '-c', 'map', '-c', 'alloc 0 1M', 'o.qcow2'];
    assert.deepEqual(normalised(await vdisk(v, ['io', ...args])), normalised(qemu('qemu-io', q, args)));
    const layout = (dir: string): string => qemu('qemu-img', dir, ['map', '--output=json', 'o.qcow2']).stdout.replace(/, "offset": \d+/g, '');
    assert.equal(layout(v), layout(q));
    const script = ['open -C -r o.qcow2', 'open -C -o driver=qcow2 b.qcow2', 'read 512k 1', 'map', 'quit'];
    sameAsQemuIo(qemuIoSession(q, script), await vdiskIoSession(v, script));
  } finally {
    t.cleanup();
  }
});

test('io --image-opts: open takes an option string, refuses -o, and reports as qemu-io does', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    const script = [
      'open driver=raw,file.filename=r.img', 'length', 'close', 'open -o driver=raw r.img', 'open -r file.filename=r.img', 'close', 'open nofile=1',
      'open file.filename=r.img,foo', 'close', 'open driver=raw,file.driver=file,file.filename=r.img,bogus=1', 'quit',
    ];
    sameAsQemuIo(qemuIoSession(t.dir, script, ['--image-opts']), await vdiskIoSession(t.dir, script, ['--image-opts']));
  } finally {
    t.cleanup();
  }
});
