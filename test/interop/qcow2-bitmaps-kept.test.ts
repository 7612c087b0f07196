/**
 * Persistent bitmaps come through every vdisk command that changes a qcow2
 * image as they come through QEMU's: each case runs the same command through
 * vdisk and through qemu-img / qemu-io on copies of one image, then compares
 * the bitmap list (qemu-img info), every consistent bitmap's bits (qemu-nbd -B
 * read by nbdinfo) and the exit status; vdisk's image must check clean.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, copyFileSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { normalise, qemu, tempDir, vdisk } from './cli-oracle.js';
import { qemuCheck, qemuImg, qemuIo } from './qcow2-helpers.js';

interface BitmapEntry {
  readonly name: string;
  readonly flags: readonly string[];
}

interface BitmapState {
  readonly list: readonly BitmapEntry[] | null;
  /** nbdinfo's map of each consistent bitmap, as qemu-nbd exports it. */
  readonly bits: Readonly<Record<string, string>>;
}

function bitmapState(file: string): BitmapState {
  const info = JSON.parse(qemuImg('info', '--output=json', file)) as { 'format-specific': { data: { bitmaps?: BitmapEntry[] } } };
  const list = info['format-specific'].data.bitmaps ?? null;
  const bits: Record<string, string> = {};
  for (const b of list ?? []) {
    if (b.flags.includes('in-use')) continue;
    const r = spawnSync('nbdinfo', [`--map=qemu:dirty-bitmap:${b.name}`, '--', '[', 'qemu-nbd', '-r', '-f', 'qcow2', '-B', b.name, file, ']'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `nbdinfo of ${b.name} in ${file}: ${r.stderr}`);
    bits[b.name] = r.stdout;
  }
  return { list, bits };
}

function assertClean(file: string): void {
  const c = qemuCheck(file);
  assert.deepEqual([c.corruptions ?? 0, c.leaks ?? 0, c['check-errors'] ?? 0], [0, 0, 0], `${file}: qemu-img check`);
}

/** 64 MiB: data at [0, 1M) written before the bitmaps, b0 enabled, b1 disabled, then a write at 2M that b0 records. */
function makeImage(file: string): void {
  qemuImg('create', '-q', '-f', 'qcow2', file, '64M');
  qemuIo(file, 'write -P 1 0 1M');
  qemuImg('bitmap', '--add', file, 'b0');
  qemuImg('bitmap', '--add', '--disable', file, 'b1');
  qemuIo(file, 'write -P 2 2M 64k');
}

/** Leaves the image's bitmaps in use, as a crash of a writer does. */
function crashWhileWriting(file: string): void {
  spawnSync('sh', ['-c', 'ulimit -c 0; exec qemu-io -f qcow2 -c "write 5M 64k" -c abort "$0"', file], { stdio: 'ignore' });
}

/** Sets incompatible feature bit 0 (refcounts may be stale), as a crash with lazy refcounts leaves it. */
function setDirtyBit(file: string): void {
  const fd = openSync(file, 'r+');
  try {
    const word = Buffer.alloc(8);
    readSync(fd, word, 0, 8, 72);
    word.writeBigUInt64BE(word.readBigUInt64BE(0) | 1n, 0);
    writeSync(fd, word, 0, 8, 72);
  } finally {
    closeSync(fd);
  }
}

interface Case {
  /** vdisk's arguments, naming the files as prepared (the copies are substituted). */
  readonly vdisk: readonly string[];
  /** The same command for QEMU: the tool and its arguments. */
  readonly qemu: readonly ['qemu-img' | 'qemu-io', ...string[]];
}

describe('persistent bitmaps after vdisk commands, against qemu-img / qemu-io', () => {
  const t = tempDir();
  const p = (name: string): string => join(t.dir, name);
  after(() => t.cleanup());

  /**
   * Runs `c` through both tools on copies of `prepare`'s files (named in
   * `files`; the copies get an `ours-` / `theirs-` prefix and every argument
   * naming one is rewritten), then compares every file's bitmaps.
   */
  async function same(label: string, files: readonly string[], prepare: () => void, c: Case): Promise<void> {
    prepare();
    for (const f of files) {
      copyFileSync(p(f), p(`ours-${f}`));
      copyFileSync(p(f), p(`theirs-${f}`));
    }
    // Backing references inside the copies still name the originals: rebase and commit need chains of their own.
    for (const who of ['ours', 'theirs']) {
      for (const f of files) {
        const backing = (JSON.parse(qemuImg('info', '--output=json', p(f))) as { 'backing-filename'?: string })['backing-filename'];
        if (backing !== undefined) qemuImg('rebase', '-u', '-b', `${who}-${backing}`, '-F', 'qcow2', p(`${who}-${f}`));
      }
    }
    const rename = (who: string) => (a: string) => (files.includes(a) ? `${who}-${a}` : a);
    const ours = await vdisk(t.dir, c.vdisk.map(rename('ours')));
    const [tool, ...args] = c.qemu;
    const theirs = qemu(tool, t.dir, args.map(rename('theirs')));
    assert.equal(ours.status, theirs.status, `${label}: exit status (vdisk: ${ours.stderr}; qemu: ${theirs.stderr})`);
    if (ours.status !== 0) assert.equal(normalise(ours.stderr), normalise(theirs.stderr), `${label}: message`);
    for (const f of files) {
      assert.deepEqual(bitmapState(p(`ours-${f}`)), bitmapState(p(`theirs-${f}`)), `${label}: bitmaps of ${f}`);
      assertClean(p(`ours-${f}`));
    }
  }

  const image = (): void => makeImage(p('a.qcow2'));
  const withSnapshot = (): void => {
    makeImage(p('a.qcow2'));
    qemuImg('snapshot', '-c', 's1', p('a.qcow2'));
    qemuIo(p('a.qcow2'), 'write -P 3 4M 64k');
  };

  it('snapshot -c, -d and -a (refused while bitmaps exist) keep the bitmaps', async () => {
    await same('snapshot -c', ['a.qcow2'], image, { vdisk: ['snapshot', '-c', 's2', 'a.qcow2'], qemu: ['qemu-img', 'snapshot', '-c', 's2', 'a.qcow2'] });
    await same('snapshot -d', ['a.qcow2'], withSnapshot, { vdisk: ['snapshot', '-d', 's1', 'a.qcow2'], qemu: ['qemu-img', 'snapshot', '-d', 's1', 'a.qcow2'] });
    await same('snapshot -a', ['a.qcow2'], withSnapshot, { vdisk: ['snapshot', '-a', 's1', 'a.qcow2'], qemu: ['qemu-img', 'snapshot', '-a', 's1', 'a.qcow2'] });
  });

  it('amend keeps the bitmaps (lazy refcounts, refcount width with a new size); a downgrade drops them without leaking', async () => {
    for (const o of ['lazy_refcounts=on', 'refcount_bits=64,size=128M']) {
      await same(`amend -o ${o}`, ['a.qcow2'], image, { vdisk: ['amend', '-o', o, 'a.qcow2'], qemu: ['qemu-img', 'amend', '-o', o, 'a.qcow2'] });
    }
    image();
    copyFileSync(p('a.qcow2'), p('v2.qcow2'));
    const r = await vdisk(t.dir, ['amend', '-o', 'compat=0.10', 'v2.qcow2']);
    assert.equal(r.status, 0, r.stderr);
    // qemu-img 7.2 drops them too (and leaks their clusters): the list is what it shows.
    assert.deepEqual(bitmapState(p('v2.qcow2')), { list: null, bits: {} });
    assertClean(p('v2.qcow2'));
  });

  it('resize grows and shrinks the bitmaps with the disk, and is refused while a bitmap is inconsistent', async () => {
    await same('resize grow', ['a.qcow2'], image, { vdisk: ['resize', 'a.qcow2', '128M'], qemu: ['qemu-img', 'resize', 'a.qcow2', '128M'] });
    await same('resize shrink', ['a.qcow2'], image, { vdisk: ['resize', '--shrink', 'a.qcow2', '32M'], qemu: ['qemu-img', 'resize', '--shrink', 'a.qcow2', '32M'] });
    const broken = (): void => {
      makeImage(p('a.qcow2'));
      crashWhileWriting(p('a.qcow2'));
    };
    await same('resize with an in-use bitmap', ['a.qcow2'], broken, { vdisk: ['resize', 'a.qcow2', '128M'], qemu: ['qemu-img', 'resize', 'a.qcow2', '128M'] });
  });

  it('guest writes, zeroes, discards and compressed writes are recorded in the enabled bitmaps', async () => {
    const cmds = ['write -P 5 5M 64k', 'write -z 7M 4k', 'discard 9M 128k', 'write -c 12M 64k', 'write 20M 1k', 'read 0 64k'];
    const argv = [...cmds.flatMap((c) => ['-c', c]), 'a.qcow2'];
    await same('io', ['a.qcow2'], image, { vdisk: ['io', ...argv], qemu: ['qemu-io', '-f', 'qcow2', ...argv] });
    await same('io read only', ['a.qcow2'], image, { vdisk: ['io', '-c', 'read 0 64k', 'a.qcow2'], qemu: ['qemu-io', '-f', 'qcow2', '-c', 'read 0 64k', 'a.qcow2'] });
    // A dirty image (lazy refcounts) is repaired on open, then written.
    const dirty = (): void => {
      makeImage(p('a.qcow2'));
      qemuImg('amend', '-o', 'lazy_refcounts=on', p('a.qcow2'));
      setDirtyBit(p('a.qcow2'));
    };
    await same('io on a dirty image', ['a.qcow2'], dirty, { vdisk: ['io', '-c', 'write 8M 64k', 'a.qcow2'], qemu: ['qemu-io', '-f', 'qcow2', '-c', 'write 8M 64k', 'a.qcow2'] });
  });

  /** base (data at 0 and 3M, bitmap c0) ← mid (data at 8M, bitmap m0) ← top (bitmaps b0, b1; data at 2M); other: unrelated, data at 16M. */
  const chain = (): void => {
    qemuImg('create', '-q', '-f', 'qcow2', p('base.qcow2'), '64M');
    qemuIo(p('base.qcow2'), 'write -P 1 0 1M', 'write -P 1 3M 64k');
    qemuImg('bitmap', '--add', p('base.qcow2'), 'c0');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('mid.qcow2'));
    qemuIo(p('mid.qcow2'), 'write -P 2 8M 64k');
    qemuImg('bitmap', '--add', p('mid.qcow2'), 'm0');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', p('top.qcow2'));
    qemuImg('bitmap', '--add', p('top.qcow2'), 'b0');
    qemuImg('bitmap', '--add', '--disable', p('top.qcow2'), 'b1');
    qemuIo(p('top.qcow2'), 'write -P 3 2M 64k');
    qemuImg('create', '-q', '-f', 'qcow2', p('other.qcow2'), '64M');
    qemuIo(p('other.qcow2'), 'write -P 9 16M 64k');
  };
  const files = ['base.qcow2', 'mid.qcow2', 'top.qcow2', 'other.qcow2'];

  it('rebase (-u, and safe: the rewritten ranges are recorded) keeps the bitmaps of the whole chain', async () => {
    for (const [label, args] of [
      ['rebase -u', ['-u', '-b', 'base.qcow2']],
      ['rebase onto base', ['-b', 'base.qcow2']],
      ['rebase onto other', ['-b', 'other.qcow2']],
    ] as const) {
      const argv = ['rebase', ...args, '-F', 'qcow2', 'top.qcow2'];
      await same(label, files, chain, { vdisk: argv, qemu: ['qemu-img', ...argv] });
    }
  });

  it('commit records the copied ranges in the base and keeps the top bitmaps', async () => {
    for (const args of [[], ['-d'], ['-b', 'base.qcow2']]) {
      const argv = ['commit', ...args, 'top.qcow2'];
      await same(argv.join(' '), files, chain, { vdisk: argv, qemu: ['qemu-img', ...argv] });
    }
  });

  it('convert --bitmaps copies them (skipping inconsistent ones with --skip-broken-bitmaps)', async () => {
    image();
    const argv = ['convert', '--bitmaps', '-O', 'qcow2', 'a.qcow2'];
    const copied = await vdisk(t.dir, [...argv, 'ours-copy.qcow2']);
    assert.equal(copied.status, 0, copied.stderr);
    qemuImg(...argv.slice(0, -1), p('a.qcow2'), p('theirs-copy.qcow2'));
    assert.deepEqual(bitmapState(p('ours-copy.qcow2')), bitmapState(p('theirs-copy.qcow2')));
    assertClean(p('ours-copy.qcow2'));
    const broken = (): void => {
      makeImage(p('a.qcow2'));
      crashWhileWriting(p('a.qcow2'));
      qemuImg('bitmap', '--add', p('a.qcow2'), 'b2');
    };
    const refused = ['convert', '--bitmaps', '-O', 'qcow2', 'a.qcow2', 'refused.qcow2'];
    await same('convert of an in-use bitmap', ['a.qcow2'], broken, { vdisk: refused, qemu: ['qemu-img', ...refused] });
    broken();
    const skip = ['convert', '--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', 'a.qcow2'];
    const ours = await vdisk(t.dir, [...skip, 'ours-skip.qcow2']);
    const theirs = qemu('qemu-img', t.dir, [...skip, 'theirs-skip.qcow2']);
    assert.equal(normalise(ours.stderr), normalise(theirs.stderr));
    assert.deepEqual(bitmapState(p('ours-skip.qcow2')), bitmapState(p('theirs-skip.qcow2')));
  });
});

describe('bitmap changes while vdisk records writes', () => {
  const t = tempDir();
  const p = (name: string): string => join(t.dir, name);
  after(() => t.cleanup());

  it('a bitmap added or disabled between writes records exactly the writes made while it was enabled', async () => {
    const { openImage } = await import('../../src/block/index.js');
    makeImage(p('a.qcow2'));
    const node = await openImage(p('a.qcow2'), { readOnly: false });
    const ops = node.bitmaps;
    assert.ok(ops);
    await node.write(8 << 20, new Uint8Array(4096));
    await ops.add('late', { granularity: 1 << 20 });
    await node.write(10 << 20, new Uint8Array(4096));
    await ops.disable('b0');
    await node.write(12 << 20, new Uint8Array(4096));
    // While the image is open its bitmaps are in use on disk, but consistent for this process.
    assert.ok((await ops.list()).every((b) => !b.flags.includes('in-use')));
    await node.close();
    const map = (name: string): string => bitmapState(p('a.qcow2')).bits[name] ?? '';
    assert.match(map('b0'), /^\s+2097152\s+65536\s+1\s+dirty$/m);
    assert.match(map('b0'), /^\s+8388608\s+65536\s+1\s+dirty$/m);
    assert.match(map('b0'), /^\s+10485760\s+65536\s+1\s+dirty$/m);
    assert.doesNotMatch(map('b0'), /^\s+12582912\s/m);
    assert.match(map('late'), /^\s+10485760\s+1048576\s+1\s+dirty\n\s+11534336\s+1048576\s+0\s+clean\n\s+12582912\s+1048576\s+1\s+dirty$/m);
    assert.equal(map('b1'), `${' '.repeat(9)}0${' '.repeat(4)}67108864    0  clean\n`);
    assertClean(p('a.qcow2'));
  });
});
