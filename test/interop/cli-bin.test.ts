/**
 * The installed `vdisk` command (bin/vdisk.cjs): the CLI bundled into one
 * CommonJS file and run through V8's code cache. It must behave as the module
 * tree does: same output, the addon loaded (no lock warning), zstd's wasm
 * found, and a cache V8 accepts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, utimesSync } from 'node:fs';
import { resolve } from 'node:path';
import { qemu, tempDir, vdisk } from './cli-oracle.js';

const BIN = resolve('bin/vdisk.cjs');

function bin(cwd: string, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, [BIN, ...argv], { cwd, encoding: 'utf8', env });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

test('the installed command runs the bundle with its code cache, as the module tree runs', async () => {
  for (const f of ['dist/vdisk-bundle.cjs', 'dist/vdisk-bundle.cache', 'dist/vdisk-bundle.convert.cache']) assert.ok(existsSync(resolve(f)), `npm run build made ${f}`);
  const t = tempDir();
  try {
    for (const argv of [['--version'], ['bogus'], ['create', '-f', 'qcow2', '-o', 'compression_type=zstd', 'z.qcow2', '8M']]) {
      assert.deepEqual(bin(t.dir, argv), await vdisk(t.dir, argv), argv.join(' '));
    }
    // zstd-compressed clusters through the bundle: its wasm is found next to it.
    const io = bin(t.dir, ['io', '-c', 'write -P 5 0 192k', 'z.qcow2']);
    assert.equal(io.status, 0, io.stderr);
    const convert = (out: string): string[] => ['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'z.qcow2', out];
    // The same stderr (the compatibility warning alone): no lock warning, so the addon is loaded.
    assert.deepEqual(bin(t.dir, convert('c.qcow2')), await vdisk(t.dir, convert('d.qcow2')));
    assert.equal(qemu('qemu-img', t.dir, ['compare', 'z.qcow2', 'c.qcow2']).status, 0);
    assert.equal(qemu('qemu-img', t.dir, ['compare', 'c.qcow2', 'd.qcow2']).status, 0);
    assert.match(qemu('qemu-img', t.dir, ['info', 'c.qcow2']).stdout, /compression type: zstd/);
    assert.deepEqual(bin(t.dir, ['info', '--output=json', 'c.qcow2']), await vdisk(t.dir, ['info', '--output=json', 'c.qcow2']));
    // A cache V8 rejects (another Node, other flags) only costs the compile: the same output.
    const traced = spawnSync(process.execPath, ['--no-opt', BIN, 'info', '--output=json', 'c.qcow2'], { cwd: t.dir, encoding: 'utf8' });
    assert.equal(traced.stdout, (await vdisk(t.dir, ['info', '--output=json', 'c.qcow2'])).stdout);
  } finally {
    t.cleanup();
  }
});

test('the installed command serves over NBD: serve --fork re-runs the bin in the background, and nbdcopy reads the image back', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '16M']);
    qemu('qemu-io', t.dir, ['-f', 'qcow2', '-c', 'write -P 0x3c 1M 3M', 'a.qcow2']);
    const sock = `${t.dir}/v.sock`;
    const r = bin(t.dir, ['serve', '--fork', '--pid-file', 'pid', '-k', sock, '-f', 'qcow2', '-r', 'a.qcow2']);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(Number(readFileSync(`${t.dir}/pid`, 'utf8')) > 0);
    const copy = spawnSync('nbdcopy', [`nbd+unix:///?socket=${sock}`, `${t.dir}/out.raw`], { encoding: 'utf8' });
    assert.equal(copy.status, 0, copy.stderr);
    assert.equal(qemu('qemu-img', t.dir, ['compare', '-f', 'qcow2', '-F', 'raw', 'a.qcow2', 'out.raw']).status, 0);
    // Not persistent: the server leaves after its client.
    const deadline = Date.now() + 5000;
    while (existsSync(sock) && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    assert.equal(existsSync(sock), false);
  } finally {
    t.cleanup();
  }
});

test('a bundle older than the last tsc run is not used: the module tree runs, with the same output', async () => {
  const info = resolve('dist/.tsbuildinfo');
  const bundle = resolve('dist/vdisk-bundle.cjs');
  if (!existsSync(info) || !existsSync(bundle)) return;
  const t = tempDir();
  const saved = statSync(info);
  try {
    const later = new Date(statSync(bundle).mtimeMs + 60_000);
    utimesSync(info, later, later);
    // strace (installed by .ci/run) shows which files ran.
    const traced = spawnSync('strace', ['-f', '-e', 'trace=openat', process.execPath, BIN, '--version'], { encoding: 'utf8' });
    assert.equal(traced.error, undefined, 'strace runs');
    assert.match(traced.stderr, /dist\/src\/cli\/program\.js/, 'the module tree was loaded');
    assert.doesNotMatch(traced.stderr, /vdisk-bundle\.cjs/, 'the stale bundle was not read');
    assert.deepEqual(bin(t.dir, ['--version']), await vdisk(t.dir, ['--version']));
  } finally {
    utimesSync(info, saved.atime, saved.mtime);
    t.cleanup();
  }
});
