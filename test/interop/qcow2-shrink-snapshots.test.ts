/**
 * Shrinking a qcow2 image that has internal snapshots, as qemu-img 7.2 does:
 * every step runs through vdisk and through qemu-img on copies of one image;
 * the step's output and status, `qemu-img info --output=json` (virtual size,
 * snapshot list), each snapshot's recorded disk size and the active layer's
 * data (qemu-img compare) must match after it, and vdisk's image must check
 * clean with no leaks. Applying a snapshot restores its disk size and its data,
 * also the data past the shrunk end.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';
import { Qcow2Driver } from '../../src/formats/qcow2/qcow2-driver.js';
import { qemuCheck, qemuCompare, qemuImg, qemuIo, qemuRaw, readAll } from './qcow2-helpers.js';

process.env.TZ = 'UTC';

/** What `qemu-img info --output=json` says that both tools must agree on (snapshot dates differ when each tool made the snapshot). */
function infoOf(file: string): unknown {
  const info = JSON.parse(qemuImg('info', '--output=json', file)) as Record<string, unknown> & { snapshots?: Array<Record<string, unknown>> };
  const { snapshots, ...rest } = info;
  delete rest['actual-size'];
  delete rest['filename'];
  const list = (snapshots ?? []).map((sn) => {
    const { 'date-sec': _sec, 'date-nsec': _nsec, ...kept } = sn;
    return kept;
  });
  return { ...rest, snapshots: list };
}

/** The disk size each snapshot table entry records (extra data bytes 8..15), by snapshot name. */
function snapshotDiskSizes(file: string): Record<string, bigint | null> {
  const buf = readFileSync(file);
  const count = buf.readUInt32BE(60);
  let pos = Number(buf.readBigUInt64BE(64));
  const out: Record<string, bigint | null> = {};
  for (let i = 0; i < count; i++) {
    const idLen = buf.readUInt16BE(pos + 12);
    const nameLen = buf.readUInt16BE(pos + 14);
    const extra = buf.readUInt32BE(pos + 36);
    const nameAt = pos + 40 + extra + idLen;
    out[buf.toString('utf8', nameAt, nameAt + nameLen)] = extra >= 16 ? buf.readBigUInt64BE(pos + 48) : null;
    pos += Math.ceil((40 + extra + idLen + nameLen) / 8) * 8;
  }
  return out;
}

function assertClean(file: string, what: string): void {
  const c = qemuCheck(file);
  assert.deepEqual([c.corruptions ?? 0, c.leaks ?? 0, c['check-errors'] ?? 0], [0, 0, 0], `${what}: qemu-img check of vdisk's image`);
}

/**
 * Runs each step (`X` stands for the image) with vdisk on `ours` and with
 * qemu-img on `theirs`, comparing as the file comment says after every step.
 */
async function sameSteps(dir: string, files: { ours: string; theirs: string }, steps: readonly string[][]): Promise<void> {
  for (const step of steps) {
    const what = step.join(' ');
    const v = normalised(await vdisk(dir, step.map((a) => (a === 'X' ? files.ours : a))));
    const q = normalised(qemu('qemu-img', dir, step.map((a) => (a === 'X' ? files.theirs : a))));
    assert.deepEqual(v, { ...q, stderr: q.stderr.replaceAll(files.theirs, files.ours) }, what);
    const ours = join(dir, files.ours);
    const theirs = join(dir, files.theirs);
    assertClean(ours, what);
    assert.deepEqual(infoOf(ours), infoOf(theirs), `${what}: qemu-img info`);
    assert.deepEqual(snapshotDiskSizes(ours), snapshotDiskSizes(theirs), `${what}: snapshot disk sizes`);
    assert.ok(qemuCompare(ours, theirs), `${what}: the active layers differ`);
  }
}

/** qemu-io's pattern check of a range of the active layer. */
function reads(file: string, pattern: number, offset: string, length: string): boolean {
  const r = qemu('qemu-io', '/', ['-f', 'qcow2', '-c', `read -P ${pattern} ${offset} ${length}`, file]);
  return r.status === 0 && !r.stdout.includes('Pattern verification failed');
}

describe('qcow2 resize --shrink with internal snapshots (vdisk vs qemu-img)', () => {
  const t = tempDir();
  const p = (name: string): string => join(t.dir, name);
  after(() => t.cleanup());

  /** Makes image `base` with qemu-img (`io` written by qemu-io, then snapshot s1 unless told not to) and two copies of it. */
  function twins(base: string, image: { size: string; io: readonly string[]; options?: readonly string[]; snapshot?: boolean }): { ours: string; theirs: string } {
    qemuImg('create', '-q', '-f', 'qcow2', ...(image.options ?? []), p(base), image.size);
    qemuIo(p(base), ...image.io);
    if (image.snapshot ?? true) qemuImg('snapshot', '-c', 's1', p(base));
    copyFileSync(p(base), p(`${base}.ours`));
    copyFileSync(p(base), p(`${base}.theirs`));
    return { ours: `${base}.ours`, theirs: `${base}.theirs` };
  }

  it('drops the active mapping past the new end; applying the snapshot restores its size and data', async () => {
    const f = twins('one', { size: '64M', io: ['write -P 0x11 0 1M', 'write -P 0x22 40M 1M'] });
    await sameSteps(t.dir, f, [['resize', '--shrink', 'X', '32M']]);
    assert.equal(snapshotDiskSizes(p(f.ours))['s1'], 64n * 1024n * 1024n, 's1 keeps its disk size');
    // qemu-img applies the snapshot of the image vdisk shrank.
    copyFileSync(p(f.ours), p('one.ours-applied-by-qemu'));
    qemuImg('snapshot', '-a', 's1', p('one.ours-applied-by-qemu'));
    assertClean(p('one.ours-applied-by-qemu'), 'qemu-img snapshot -a of the vdisk-shrunk image');
    await sameSteps(t.dir, f, [['snapshot', '-a', 's1', 'X']]);
    assert.ok(qemuCompare(p('one.ours-applied-by-qemu'), p(f.theirs)), 'qemu-img apply of the vdisk-shrunk image');
    assert.ok(reads(p(f.ours), 0x22, '40M', '1M'), 'the data past the shrunk end is back');
    assert.ok(reads(p(f.ours), 0x11, '0', '1M'));
  });

  it('grows again after the shrink: past the old end reads zeros, the snapshot still has its data', async () => {
    const f = twins('grow', { size: '64M', io: ['write -P 0x11 0 1M', 'write -P 0x22 40M 1M', 'write -P 0x33 33M 64k'] });
    // 32 MiB + 512 is not cluster aligned: the cluster at 32M stays, the rest of the table goes.
    await sameSteps(t.dir, f, [
      ['resize', '--shrink', 'X', '33555456'],
      ['resize', 'X', '64M'],
    ]);
    assert.ok(reads(p(f.ours), 0, '33555456', String(64 * 1024 * 1024 - 33555456)), 'past the old end reads zeros after the grow');
    await sameSteps(t.dir, f, [['snapshot', '-a', 's1', 'X']]);
    assert.ok(reads(p(f.ours), 0x22, '40M', '1M') && reads(p(f.ours), 0x33, '33M', '64k'));
  });

  it('keeps two snapshots of different sizes, each restored with its own size', async () => {
    // 512-byte clusters: an L2 table maps 32 KiB, so whole L2 tables shared with the snapshots are dropped.
    const f = twins('two', {
      size: '4M',
      io: ['write -P 0x11 0 100k', 'write -c -P 0x33 1M 512', 'write -z 2M 64k', 'write -P 0x22 3M 200k'],
      options: ['-o', 'cluster_size=512'],
      snapshot: false,
    });
    await sameSteps(t.dir, f, [
      ['snapshot', '-c', 's1', 'X'],
      ['resize', '--shrink', 'X', '3M'],
      ['snapshot', '-c', 's2', 'X'],
      ['resize', '--shrink', 'X', '1000k'],
      ['resize', 'X', '8M'],
      ['snapshot', '-a', 's2', 'X'],
      ['snapshot', '-a', 's1', 'X'],
      ['resize', '--shrink', 'X', '512'],
      ['snapshot', '-a', 's2', 'X'],
      ['snapshot', '-d', 's2', 'X'],
      ['snapshot', '-a', 's1', 'X'],
    ]);
    assert.deepEqual(snapshotDiskSizes(p(f.ours)), { s1: 4n * 1024n * 1024n });
    assert.ok(reads(p(f.ours), 0x22, '3M', '200k'));
  });

  it('shrinks across L1 entries of a large image and restores them', async () => {
    const f = twins('big', { size: '2G', io: ['write -P 0x11 0 1M', 'write -P 0x22 600M 1M', 'write -P 0x33 1500M 1M', 'write -P 0x44 2047M 1M'] });
    await sameSteps(t.dir, f, [
      ['resize', '--shrink', 'X', '700M'],
      ['snapshot', '-c', 's2', 'X'],
      ['resize', '--shrink', 'X', '100M'],
      ['resize', 'X', '3G'],
      ['snapshot', '-a', 's2', 'X'],
      ['snapshot', '-a', 's1', 'X'],
    ]);
  });

  it('the library: resize with shrink keeps the snapshot, and apply brings back its size and data', async () => {
    qemuImg('create', '-q', '-f', 'qcow2', p('lib'), '64M');
    qemuIo(p('lib'), 'write -P 0x11 0 1M', 'write -P 0x22 40M 1M');
    const before = qemuRaw(p('lib'));
    const d = await Qcow2Driver.open(p('lib'), { readOnly: false });
    try {
      await d.snapshots.create({ name: 's1' });
      await assert.rejects(d.resize(32 * 1024 * 1024), { code: 'EINVAL' });
      await d.resize(32 * 1024 * 1024, { shrink: true });
      assert.equal(d.length, 32 * 1024 * 1024);
      assert.ok((await readAll(d)).equals(before.subarray(0, 32 * 1024 * 1024)));
      await d.snapshots.apply('s1');
      assert.equal(d.length, 64 * 1024 * 1024);
      assert.ok((await readAll(d)).equals(before), 'the snapshot reads as before the shrink, through the same driver');
    } finally {
      await d.close();
    }
    assertClean(p('lib'), 'library shrink and apply');
    assert.ok(qemuRaw(p('lib')).equals(before));
  });

  it('refuses any resize of a v2 image with snapshots, as qemu-img does', async () => {
    const f = twins('v2', { size: '64M', io: ['write -P 0x11 0 1M'], options: ['-o', 'compat=0.10'] });
    await sameSteps(t.dir, f, [
      ['resize', '--shrink', 'X', '32M'],
      ['resize', 'X', '128M'],
      ['resize', 'X', '64M'],
      ['snapshot', '-d', 's1', 'X'],
      ['resize', '--shrink', 'X', '32M'],
    ]);
  });

  it('shrinks an image with persistent bitmaps and snapshots; applying stays refused while bitmaps exist', async () => {
    const f = twins('bm', { size: '64M', io: ['write -P 0x11 0 1M', 'write -P 0x22 40M 1M'], snapshot: false });
    await sameSteps(t.dir, f, [
      ['bitmap', '--add', 'X', 'b0'],
      ['snapshot', '-c', 's1', 'X'],
      ['resize', '--shrink', 'X', '32M'],
      ['snapshot', '-a', 's1', 'X'],
      ['bitmap', '--remove', 'X', 'b0'],
      ['snapshot', '-a', 's1', 'X'],
    ]);
    assert.ok(reads(p(f.ours), 0x22, '40M', '1M'));
  });
});
