// Offline `vdisk commit` against `qemu-img commit` on the same chains: same guest data, same allocation, clean images, same messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

/** base <- mid <- top, each with a pattern of its own, some overlapping, plus a zeroed range in top. */
function makeChain(dir: string, prefix: string): void {
  const img = (args: string[]): void => assert.equal(qemu('qemu-img', dir, args).status, 0);
  const io = (file: string, cmds: string[]): void => {
    const r = qemu('qemu-io', dir, [...cmds.flatMap((c) => ['-c', c]), file]);
    assert.equal(r.status, 0, r.stderr);
  };
  img(['create', '-q', '-f', 'qcow2', `${prefix}base.qcow2`, '8M']);
  img(['create', '-q', '-f', 'qcow2', '-b', `${prefix}base.qcow2`, '-F', 'qcow2', `${prefix}mid.qcow2`]);
  img(['create', '-q', '-f', 'qcow2', '-b', `${prefix}mid.qcow2`, '-F', 'qcow2', `${prefix}top.qcow2`]);
  io(`${prefix}base.qcow2`, ['write -P 1 0 4M']);
  io(`${prefix}mid.qcow2`, ['write -P 2 1M 2M', 'write -P 5 6M 64k']);
  io(`${prefix}top.qcow2`, ['write -P 3 512k 1M', 'write -z 3M 128k', 'write -P 4 7M 4k']);
}

for (const mode of [[], ['-d'], ['-b', 'base.qcow2']] as const) {
  test(`vdisk commit ${mode.join(' ') || '(default)'} leaves the same images as qemu-img commit`, async () => {
    const t = tempDir();
    try {
      makeChain(t.dir, '');
      for (const f of ['base', 'mid', 'top']) copyFileSync(join(t.dir, `${f}.qcow2`), join(t.dir, `q-${f}.qcow2`));
      // The q- copies name the unprefixed images as backing: rebuild their chain with their own names.
      assert.equal(qemu('qemu-img', t.dir, ['rebase', '-u', '-b', 'q-base.qcow2', '-F', 'qcow2', 'q-mid.qcow2']).status, 0);
      assert.equal(qemu('qemu-img', t.dir, ['rebase', '-u', '-b', 'q-mid.qcow2', '-F', 'qcow2', 'q-top.qcow2']).status, 0);
      const ours = normalised(await vdisk(t.dir, ['commit', ...mode, 'top.qcow2']));
      const theirs = normalised(qemu('qemu-img', t.dir, ['commit', ...mode.map((a) => (a === 'base.qcow2' ? 'q-base.qcow2' : a)), 'q-top.qcow2']));
      assert.deepEqual(ours, theirs);
      for (const f of ['base', 'mid', 'top']) {
        const cmp = qemu('qemu-img', t.dir, ['compare', '-f', 'qcow2', '-F', 'qcow2', `${f}.qcow2`, `q-${f}.qcow2`]);
        assert.equal(cmp.status, 0, `${f}: ${cmp.stdout}${cmp.stderr}`);
        const check = qemu('qemu-img', t.dir, ['check', `${f}.qcow2`]);
        assert.equal(check.status, 0, check.stdout + check.stderr);
      }
      const mapOurs = qemu('qemu-img', t.dir, ['map', '--output=json', 'top.qcow2']).stdout.replace(/"offset": \d+\}/g, '}');
      const mapTheirs = qemu('qemu-img', t.dir, ['map', '--output=json', 'q-top.qcow2']).stdout.replace(/"offset": \d+\}/g, '}');
      assert.equal(mapOurs.replace(/q-/g, ''), mapTheirs.replace(/q-/g, ''));
    } finally {
      t.cleanup();
    }
  });
}

test('vdisk commit refuses an image without a backing file and an unknown base as qemu-img does', async () => {
  const t = tempDir();
  try {
    makeChain(t.dir, '');
    for (const argv of [['commit', 'base.qcow2'], ['commit', '-b', 'nonexist', 'top.qcow2'], ['commit', '-r', '1x', 'top.qcow2'], ['commit']]) {
      assert.deepEqual(normalised(await vdisk(t.dir, argv)), normalised(qemu('qemu-img', t.dir, argv)), argv.join(' '));
    }
  } finally {
    t.cleanup();
  }
});
