/**
 * The installed `vdisk` command (bin/vdisk.cjs): the CLI bundled into one
 * CommonJS file and run through V8's code cache. It must behave as the module
 * tree does: same output, the addon loaded (no lock warning), zstd's wasm
 * found, and a cache V8 accepts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { qemu, tempDir, vdisk } from './cli-oracle.js';

const BIN = resolve('bin/vdisk.cjs');

function bin(cwd: string, argv: readonly string[], env: NodeJS.ProcessEnv = process.env): { stdout: string; stderr: string; status: number | null } {
  const r = spawnSync(process.execPath, [BIN, ...argv], { cwd, encoding: 'utf8', env });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status };
}

test('the installed command runs the bundle with its code cache, as the module tree runs', async () => {
  assert.ok(existsSync(resolve('dist/vdisk-bundle.cjs')) && existsSync(resolve('dist/vdisk-bundle.cache')), 'npm run build made the bundle and its cache');
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
