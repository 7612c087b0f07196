/**
 * Internal snapshots: `vdisk snapshot` against `qemu-img snapshot` on copies
 * of the same images; qemu-img check and compare judge the results.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo, qemuRaw } from './qcow2-helpers.js';

process.env.TZ = 'UTC';

/** A v3 image with data, a compressed cluster and a zero cluster. */
function makeImage(file: string, opts: readonly string[] = []): void {
  qemuImg('create', '-f', 'qcow2', ...opts, file, '64M');
  qemuIo(file, 'write -P 0x11 0 1M', 'write -c -P 0x22 2M 64k', 'write -z 4M 64k', 'write -P 0x12 40M 128k');
}

function assertClean(file: string): void {
  const c = qemuCheck(file);
  assert.equal(c.corruptions ?? 0, 0, `${file}: corruptions`);
  assert.equal(c.leaks ?? 0, 0, `${file}: leaks`);
  assert.equal(c['check-errors'] ?? 0, 0, `${file}: check errors`);
}

describe('qcow2 internal snapshots (vdisk snapshot vs qemu-img snapshot)', () => {
  const t = tempDir();
  const p = (name: string): string => join(t.dir, name);
  before(() => undefined);
  after(() => t.cleanup());

  it('lists snapshots made by qemu-img exactly as qemu-img does, and info shows the same table', async () => {
    makeImage(p('l.qcow2'));
    qemuImg('snapshot', '-c', 'first', p('l.qcow2'));
    qemuImg('snapshot', '-c', 'second one', p('l.qcow2'));
    const ours = await vdisk(t.dir, ['snapshot', '-l', 'l.qcow2']);
    const theirs = qemu('qemu-img', t.dir, ['snapshot', '-l', 'l.qcow2']);
    assert.deepEqual(normalised(ours), normalised(theirs));
    assert.match(ours.stdout, /^Snapshot list:\nID {8}TAG {15}VM SIZE {16}DATE {5}VM CLOCK {5}ICOUNT\n1 {9}first /);
    const infoOurs = await vdisk(t.dir, ['info', '--output=json', 'l.qcow2']);
    const infoTheirs = qemu('qemu-img', t.dir, ['info', '--output=json', 'l.qcow2']);
    assert.deepEqual(JSON.parse(infoOurs.stdout).snapshots, JSON.parse(infoTheirs.stdout).snapshots);
  });

  it('creates snapshots that qemu-img lists and applies, leaving the image clean', async () => {
    makeImage(p('c.qcow2'));
    const before = qemuRaw(p('c.qcow2'));
    const r = await vdisk(t.dir, ['snapshot', '-c', 'snap1', 'c.qcow2']);
    assert.deepEqual(r, { stdout: '', stderr: '', status: 0 });
    assertClean(p('c.qcow2'));
    assert.match(qemuImg('snapshot', '-l', p('c.qcow2')), /\n1 +snap1 +0 B /);
    qemuIo(p('c.qcow2'), 'write -P 0x33 512k 1M', 'write -P 0x44 2M 64k', 'discard 4M 64k');
    assertClean(p('c.qcow2'));
    qemuImg('snapshot', '-a', 'snap1', p('c.qcow2'));
    assertClean(p('c.qcow2'));
    assert.ok(qemuRaw(p('c.qcow2')).equals(before), 'qemu-img apply of a vdisk snapshot restores the data');
  });

  it('applies snapshots like qemu-img apply (same data, clean check), by id or by name', async () => {
    makeImage(p('a.qcow2'));
    qemuImg('snapshot', '-c', 's1', p('a.qcow2'));
    qemuIo(p('a.qcow2'), 'write -P 0x33 512k 1M', 'write -P 0x44 60M 64k', 'discard 2M 64k');
    qemuImg('snapshot', '-c', 's2', p('a.qcow2'));
    qemuIo(p('a.qcow2'), 'write -P 0x55 100k 64k', 'write -z 40M 64k');
    for (const target of ['s1', '2']) {
      copyFileSync(p('a.qcow2'), p('a-ours.qcow2'));
      copyFileSync(p('a.qcow2'), p('a-theirs.qcow2'));
      const r = await vdisk(t.dir, ['snapshot', '-a', target, 'a-ours.qcow2']);
      assert.equal(r.status, 0, r.stderr);
      qemuImg('snapshot', '-a', target, p('a-theirs.qcow2'));
      assertClean(p('a-ours.qcow2'));
      assert.ok(qemuCompare(p('a-ours.qcow2'), p('a-theirs.qcow2')), `apply ${target}: contents differ`);
      // After the revert the image is still fully usable by qemu: writes and a second apply.
      qemuIo(p('a-ours.qcow2'), 'write -P 0x66 0 2M');
      assertClean(p('a-ours.qcow2'));
    }
  });

  it('deletes snapshots like qemu-img delete: clean, no leaks, the others intact', async () => {
    makeImage(p('d.qcow2'));
    qemuImg('snapshot', '-c', 's1', p('d.qcow2'));
    qemuIo(p('d.qcow2'), 'write -P 0x33 512k 1M');
    qemuImg('snapshot', '-c', 's2', p('d.qcow2'));
    qemuIo(p('d.qcow2'), 'write -P 0x55 100k 64k');
    copyFileSync(p('d.qcow2'), p('d-theirs.qcow2'));
    assert.equal((await vdisk(t.dir, ['snapshot', '-d', 's1', 'd.qcow2'])).status, 0);
    qemuImg('snapshot', '-d', 's1', p('d-theirs.qcow2'));
    assertClean(p('d.qcow2'));
    assert.equal(qemuImg('snapshot', '-l', p('d.qcow2')), qemuImg('snapshot', '-l', p('d-theirs.qcow2')));
    assert.ok(qemuCompare(p('d.qcow2'), p('d-theirs.qcow2')));
    assert.equal((await vdisk(t.dir, ['snapshot', '-d', 's2', 'd.qcow2'])).status, 0);
    assertClean(p('d.qcow2'));
    assert.equal(qemuImg('snapshot', '-l', p('d.qcow2')), '');
    // Every cluster the snapshots held is free again: same allocation count as a fresh copy.
    const end = JSON.parse(qemuImg('check', '--output=json', p('d.qcow2'))) as { 'allocated-clusters': number };
    qemuImg('snapshot', '-d', 's2', p('d-theirs.qcow2'));
    const endTheirs = JSON.parse(qemuImg('check', '--output=json', p('d-theirs.qcow2'))) as { 'allocated-clusters': number };
    assert.equal(end['allocated-clusters'], endTheirs['allocated-clusters']);
  });

  it('writes after a vdisk snapshot copy the shared clusters (the snapshot keeps its data)', async () => {
    makeImage(p('w.qcow2'), ['-o', 'compat=0.10']);
    const before = qemuRaw(p('w.qcow2'));
    assert.equal((await vdisk(t.dir, ['snapshot', '-c', 'base', 'w.qcow2'])).status, 0);
    const io = await vdisk(t.dir, ['io', '-f', 'qcow2', '-c', 'write -P 0x77 0 96k', '-c', 'write -P 0x78 2M 4k', '-c', 'write -z 40M 64k', 'w.qcow2']);
    assert.equal(io.status, 0, io.stderr);
    assertClean(p('w.qcow2'));
    const changed = qemuRaw(p('w.qcow2'));
    assert.equal(changed[0], 0x77);
    assert.equal((await vdisk(t.dir, ['snapshot', '-a', 'base', 'w.qcow2'])).status, 0);
    assertClean(p('w.qcow2'));
    assert.ok(qemuRaw(p('w.qcow2')).equals(before));
  });

  it('reports errors with qemu-img messages and exit codes', async () => {
    makeImage(p('e.qcow2'));
    qemuImg('create', '-f', 'raw', p('e.raw'), '1M');
    const cases: string[][] = [
      ['snapshot', '-a', 'nosuch', 'e.qcow2'],
      ['snapshot', '-d', 'nosuch', 'e.qcow2'],
      ['snapshot', '-l', '-c', 'x', 'e.qcow2'],
      ['snapshot', '-l', 'e.qcow2', 'other'],
      ['snapshot', '-a'],
      ['snapshot', '-c', 'x', '-U', 'e.qcow2'],
      ['snapshot', '-l', 'missing.qcow2'],
      ['snapshot', '-c', 'x', 'e.raw'],
      ['snapshot', '-l', 'e.raw'],
      ['snapshot', '-d', 'x', 'e.raw'],
      ['snapshot', 'e.qcow2'],
    ];
    for (const argv of cases) {
      const ours = normalised(await vdisk(t.dir, argv));
      const theirs = normalised(qemu('qemu-img', t.dir, argv));
      // qemu-img warns about probing raw; the rest must match.
      const strip = (s: string): string => s.replace(/^WARNING: Image format was not specified[\s\S]*?restrictions\.\n/m, '');
      assert.deepEqual({ ...ours, stderr: strip(ours.stderr) }, { ...theirs, stderr: strip(theirs.stderr) }, argv.join(' '));
    }
    assert.ok(readFileSync(p('e.raw')).every((b) => b === 0));
  });
});
