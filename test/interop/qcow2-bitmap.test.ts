/**
 * Persistent bitmaps: `vdisk bitmap` against `qemu-img bitmap` on copies of
 * the same image; qemu-img info and check judge the results.
 */
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';
import { qemuCheck, qemuImg, qemuIo } from './qcow2-helpers.js';

function assertClean(file: string): void {
  const c = qemuCheck(file);
  assert.deepEqual([c.corruptions ?? 0, c.leaks ?? 0, c['check-errors'] ?? 0], [0, 0, 0], `${file}: check`);
}

function bitmapsOf(file: string): unknown {
  const info = JSON.parse(qemuImg('info', '--output=json', file)) as { 'format-specific': { data: { bitmaps?: unknown } } };
  return info['format-specific'].data.bitmaps;
}

describe('qcow2 persistent bitmaps (vdisk bitmap vs qemu-img bitmap)', () => {
  const t = tempDir();
  const p = (name: string): string => join(t.dir, name);
  after(() => t.cleanup());

  it('add, disable, enable, clear and remove leave the image as qemu-img leaves it', async () => {
    qemuImg('create', '-f', 'qcow2', '-o', 'cluster_size=4k', p('b.qcow2'), '64M');
    copyFileSync(p('b.qcow2'), p('q.qcow2'));
    const steps: string[][] = [
      ['--add', 'b.qcow2', 'b0'],
      ['--add', '-g', '128k', '--disable', 'b.qcow2', 'b1'],
      ['--enable', 'b.qcow2', 'b1'],
      ['--disable', 'b.qcow2', 'b0'],
      ['--clear', 'b.qcow2', 'b0'],
      ['--add', 'b.qcow2', 'b2'],
      ['--remove', 'b.qcow2', 'b1'],
    ];
    for (const step of steps) {
      const r = await vdisk(t.dir, ['bitmap', ...step]);
      assert.equal(r.status, 0, `${step.join(' ')}: ${r.stderr}`);
      qemuImg('bitmap', ...step.map((a) => (a === 'b.qcow2' ? p('q.qcow2') : a)));
      assertClean(p('b.qcow2'));
      assert.deepEqual(bitmapsOf(p('b.qcow2')), bitmapsOf(p('q.qcow2')), step.join(' '));
    }
    // vdisk info prints the same bitmap list as qemu-img info.
    const ours = await vdisk(t.dir, ['info', 'b.qcow2']);
    const theirs = qemu('qemu-img', t.dir, ['info', 'q.qcow2']);
    assert.equal(ours.stdout.slice(ours.stdout.indexOf('Format specific')), theirs.stdout.slice(theirs.stdout.indexOf('Format specific')));
    for (const name of ['b0', 'b2']) assert.equal((await vdisk(t.dir, ['bitmap', '--remove', 'b.qcow2', name])).status, 0);
    assertClean(p('b.qcow2'));
    assert.equal(bitmapsOf(p('b.qcow2')), undefined);
  });

  it('merges bitmaps qemu filled (same image and another image) into what qemu-img merge gives', async () => {
    qemuImg('create', '-f', 'qcow2', p('src.qcow2'), '64M');
    // qemu-io marks writes in enabled persistent bitmaps and stores them on close.
    qemuImg('bitmap', '--add', '-g', '64k', p('src.qcow2'), 'dirty');
    qemuIo(p('src.qcow2'), 'write 0 64k', 'write 5M 1M', 'write 63M 64k');
    qemuImg('bitmap', '--add', '-g', '1M', p('src.qcow2'), 'coarse');
    copyFileSync(p('src.qcow2'), p('m-ours.qcow2'));
    copyFileSync(p('src.qcow2'), p('m-theirs.qcow2'));
    assert.equal((await vdisk(t.dir, ['bitmap', '--merge', 'dirty', 'm-ours.qcow2', 'coarse'])).status, 0);
    qemuImg('bitmap', '--merge', 'dirty', p('m-theirs.qcow2'), 'coarse');
    assertClean(p('m-ours.qcow2'));
    qemuImg('create', '-f', 'qcow2', p('other.qcow2'), '64M');
    qemuImg('bitmap', '--add', '-g', '256k', p('other.qcow2'), 'into');
    copyFileSync(p('other.qcow2'), p('o-theirs.qcow2'));
    const r = await vdisk(t.dir, ['bitmap', '--merge', 'dirty', '-b', 'src.qcow2', 'other.qcow2', 'into']);
    assert.equal(r.status, 0, r.stderr);
    qemuImg('bitmap', '--merge', 'dirty', '-b', p('src.qcow2'), p('o-theirs.qcow2'), 'into');
    assertClean(p('other.qcow2'));
    // Compare the bits: qemu-img map of a bitmap is not available, so export them through vdisk's reader.
    const { openImage } = await import('../../src/block/index.js');
    for (const [a, b, name] of [
      ['m-ours.qcow2', 'm-theirs.qcow2', 'coarse'],
      ['other.qcow2', 'o-theirs.qcow2', 'into'],
    ] as const) {
      const na = await openImage(p(a), { readOnly: true });
      const nb = await openImage(p(b), { readOnly: true });
      try {
        const ba = await na.bitmaps?.readBits(name);
        const bb = await nb.bitmaps?.readBits(name);
        assert.ok(ba && bb);
        assert.deepEqual(Buffer.from(ba.bits), Buffer.from(bb.bits), `${a} ${name}`);
        assert.ok(ba.bits.some((x) => x !== 0));
      } finally {
        await na.close();
        await nb.close();
      }
    }
  });

  it('reports errors with qemu-img messages and exit codes', async () => {
    qemuImg('create', '-f', 'qcow2', p('e.qcow2'), '64M');
    qemuImg('bitmap', '--add', p('e.qcow2'), 'b0');
    const cases: string[][] = [
      ['bitmap', '--add', 'e.qcow2', 'b0'],
      ['bitmap', '--remove', 'e.qcow2', 'nosuch'],
      ['bitmap', 'e.qcow2', 'b0'],
      ['bitmap', '--clear', 'e.qcow2'],
      ['bitmap', '--add', '-g', '100', 'e.qcow2', 'b3'],
      ['bitmap', '--add', '-g', 'abc', 'e.qcow2', 'b3'],
      ['bitmap', '-g', '65536', '--enable', 'e.qcow2', 'b0'],
      ['bitmap', '--add', '-b', 'e.qcow2', 'e.qcow2', 'x'],
      ['bitmap', '--add', '-F', 'qcow2', 'e.qcow2', 'x'],
      ['bitmap', '--merge', 'b0', 'e.qcow2', 'nosuch'],
      ['bitmap', '--merge', 'nosuch', 'e.qcow2', 'b0'],
    ];
    for (const argv of cases) {
      assert.deepEqual(normalised(await vdisk(t.dir, argv)), normalised(qemu('qemu-img', t.dir, argv)), argv.join(' '));
    }
    assertClean(p('e.qcow2'));
  });
});
