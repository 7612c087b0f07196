/**
 * `vdisk amend` against `qemu-img amend`: the same command on copies of the
 * same image; qemu-img check, info and compare judge the results.
 */
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo } from './qcow2-helpers.js';

interface Specific {
  readonly compat: string;
  readonly 'lazy-refcounts'?: boolean;
  readonly 'refcount-bits': number;
}

function specific(file: string): Specific & { readonly size: number } {
  const info = JSON.parse(qemuImg('info', '--output=json', file)) as { 'virtual-size': number; 'format-specific': { data: Specific } };
  return { ...info['format-specific'].data, size: info['virtual-size'] };
}

function assertClean(file: string): void {
  const c = qemuCheck(file);
  assert.deepEqual([c.corruptions ?? 0, c.leaks ?? 0, c['check-errors'] ?? 0], [0, 0, 0], `${file}: check`);
}

describe('qcow2 amend (vdisk amend vs qemu-img amend)', () => {
  const t = tempDir();
  const p = (name: string): string => join(t.dir, name);
  after(() => t.cleanup());

  /** A v3 image with data, compressed, zero-alloc and zero-plain clusters, and a snapshot. */
  function makeImage(name: string, opts: readonly string[] = []): string {
    const file = p(name);
    qemuImg('create', '-f', 'qcow2', ...opts, file, '64M');
    qemuIo(file, 'write -P 0x11 0 1M', 'write -c -P 0x22 2M 64k', 'write -z 4M 64k', 'write -P 0x12 8M 64k', 'write -z -u 8M 64k');
    qemuImg('snapshot', '-c', 'snap', file);
    qemuIo(file, 'write -P 0x33 512k 64k', 'write -z 0 64k', 'write -z 16M 128k');
    return file;
  }

  /** Runs one amend with both tools on copies of `src`; both must succeed and agree. */
  async function amendBoth(src: string, options: readonly string[]): Promise<{ ours: string; theirs: string }> {
    const ours = `${src}.ours.qcow2`;
    const theirs = `${src}.theirs.qcow2`;
    copyFileSync(src, ours);
    copyFileSync(src, theirs);
    const r = await vdisk(t.dir, ['amend', ...options, ours]);
    assert.equal(r.status, 0, `vdisk amend ${options.join(' ')}: ${r.stderr}`);
    qemuImg('amend', ...options, theirs);
    assertClean(ours);
    assert.ok(qemuCompare(src, ours), 'contents unchanged');
    const { size: s1, ...a } = specific(ours);
    const { size: s2, ...b } = specific(theirs);
    assert.deepEqual(a, b, 'format-specific info as qemu-img amend leaves it');
    assert.equal(s1, s2);
    return { ours, theirs };
  }

  it('downgrades to compat=0.10, expanding zero clusters in the active state and the snapshot', async () => {
    const src = makeImage('down.qcow2');
    const { ours, theirs } = await amendBoth(src, ['-o', 'compat=0.10']);
    assert.equal(specific(ours).compat, '0.10');
    // The snapshot still holds its data, zeros included.
    for (const f of [ours, theirs]) qemuImg('snapshot', '-a', 'snap', f);
    assert.ok(qemuCompare(ours, theirs));
    assertClean(ours);
  });

  it('downgrades an image with a backing file (zero clusters must not show the backing)', async () => {
    qemuImg('create', '-f', 'qcow2', p('base.qcow2'), '64M');
    qemuIo(p('base.qcow2'), 'write -P 0x99 0 4M');
    qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('over.qcow2'));
    qemuIo(p('over.qcow2'), 'write -z 0 128k', 'write -P 0x11 1M 64k', 'write -z 1M 64k');
    await amendBoth(p('over.qcow2'), ['-o', 'compat=0.10']);
  });

  it('upgrades a v2 image to compat=1.1 and back', async () => {
    const src = makeImage('up.qcow2', ['-o', 'compat=0.10']);
    const { ours } = await amendBoth(src, ['-o', 'compat=1.1']);
    assert.equal(specific(ours).compat, '1.1');
    await amendBoth(ours, ['-o', 'compat=0.10']);
  });

  it('switches lazy refcounts on and off', async () => {
    const src = makeImage('lazy.qcow2');
    const { ours } = await amendBoth(src, ['-o', 'lazy_refcounts=on']);
    assert.equal(specific(ours)['lazy-refcounts'], true);
    await amendBoth(ours, ['-o', 'lazy_refcounts=off']);
  });

  it('changes the refcount width (rewriting the refcount structures) and grows the disk', async () => {
    const src = makeImage('rc.qcow2');
    for (const bits of ['1', '2', '8', '64']) {
      if (bits === '1') {
        // A snapshot makes refcounts of 2: one bit cannot hold them.
        const r = normalised(await vdisk(t.dir, ['amend', '-o', 'refcount_bits=1', 'rc.qcow2']));
        const q = normalised(qemu('qemu-img', t.dir, ['amend', '-o', 'refcount_bits=1', 'rc.qcow2']));
        assert.equal(r.status, q.status);
        assert.match(r.stderr, /^vdisk: Cannot decrease refcount entry width to 1 bits: Cluster at offset 0x[0-9a-f]+ has a refcount of 2\n$/);
        continue;
      }
      const { ours } = await amendBoth(src, ['-o', `refcount_bits=${bits}`]);
      assert.equal(specific(ours)['refcount-bits'], Number(bits));
      qemuIo(ours, 'write -P 0x44 20M 1M');
      assertClean(ours);
    }
    const { ours } = await amendBoth(src, ['-o', 'size=128M,refcount_bits=4']);
    assert.equal(specific(ours).size, 128 * 1024 * 1024);
  });

  it('reports errors with qemu-img messages and exit codes, changing nothing', async () => {
    makeImage('e.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'compat=0.10', p('e2.qcow2'), '64M');
    qemuImg('create', '-f', 'qcow2', '-o', 'extended_l2=on', p('ex.qcow2'), '64M');
    qemuImg('create', '-f', 'raw', p('e.raw'), '1M');
    const cases: string[][] = [
      ['amend', 'e.qcow2'],
      ['amend', '-o', '', 'e.qcow2'],
      ['amend', '-o', 'cluster_size=4096', 'e.qcow2'],
      ['amend', '-o', 'foo=bar', 'e.qcow2'],
      ['amend', '-o', 'compat=2', 'e.qcow2'],
      ['amend', '-o', 'refcount_bits=3', 'e.qcow2'],
      ['amend', '-o', 'refcount_bits=abc', 'e.qcow2'],
      ['amend', '-o', 'lazy_refcounts=maybe', 'e.qcow2'],
      ['amend', '-o', 'lazy_refcounts=on,compat=0.10', 'e.qcow2'],
      ['amend', '-o', 'refcount_bits=8', 'e2.qcow2'],
      ['amend', '-o', 'lazy_refcounts=on', 'e2.qcow2'],
      ['amend', '-o', 'compat=0.10', 'ex.qcow2'],
      ['amend', '-o', 'refcount_bits=8,compat=0.10', 'e.qcow2'],
      ['amend', '-o', 'backing_file=x', 'e.qcow2'],
      ['amend', '-o', 'data_file=x', 'e.qcow2'],
      ['amend', '-o', 'data_file_raw=on', 'e.qcow2'],
      ['amend', '-o', 'size=1000', 'e.qcow2'],
      ['amend', '-o', 'encrypt.new-secret=x', 'e.qcow2'],
      ['amend', '-o', 'help', 'e.qcow2'],
      ['amend', '-f', 'qcow2', '-o', 'help'],
      ['amend', '-f', 'raw', '-o', 'compat=1.1', 'e.raw'],
      ['amend', '-o', 'size=64M'],
      ['amend', '-o', 'compat=1.1', 'missing.qcow2'],
    ];
    const before = qemuImg('info', p('e.qcow2'));
    for (const argv of cases) {
      const ours = normalised(await vdisk(t.dir, argv));
      const theirs = normalised(qemu('qemu-img', t.dir, argv));
      assert.deepEqual(ours, theirs, argv.join(' '));
    }
    assert.equal(qemuImg('info', p('e.qcow2')), before);
    assertClean(p('e.qcow2'));
  });
});
