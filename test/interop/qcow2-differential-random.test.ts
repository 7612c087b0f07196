import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { seededRandom } from '../support/seeded-random.js';

// Issue 2's differential test: the same random sequence of writes, zero-writes,
// discards and compressed writes, applied by `vdisk io` and by `qemu-io` to
// copies of one image; qemu-img compare must say identical and qemu-img check
// must find no errors and no leaks on vdisk's result.

// The installed command (the bundle through its code cache, bin/vdisk.cjs).
const VDISK = resolve('bin/vdisk.cjs');


interface Kind {
  readonly name: string;
  readonly create: string;
  readonly clusterSize: number;
  readonly backing?: boolean;
  readonly snapshot?: boolean;
  readonly compressed?: boolean;
}

const SIZE = 4 * 1024 * 1024;

function randomOps(random: () => number, kind: Kind, count: number): string[] {
  const ops: string[] = [];
  const pick = (max: number): number => Math.floor(random() * max);
  // Compressed writes come first, onto fresh clusters: QEMU 7.2 keeps packing
  // compressed data into a cluster after it was freed and reused for data
  // (a refcount-2 cluster, its own check reports it), so compressed writes after
  // frees would make the oracle itself corrupt. vdisk does not (see the test below).
  if (kind.compressed) {
    for (let i = 0; i < 6; i++) ops.push(`write -c -P ${1 + pick(254)} ${pick(SIZE / kind.clusterSize) * kind.clusterSize} ${kind.clusterSize}`);
  }
  for (let i = 0; i < count; i++) {
    const r = random();
    // Offsets and lengths at 512-byte granularity, often unaligned to the cluster.
    const off = pick(SIZE / 512) * 512;
    const len = Math.min(SIZE - off, (1 + pick(kind.clusterSize >= 65536 ? 256 : 64)) * 512);
    if (r < 0.5) ops.push(`write -P ${1 + pick(254)} ${off} ${len}`);
    else if (r < 0.65) ops.push(`write -z ${off} ${len}`);
    else if (r < 0.75) ops.push(`write -z -u ${off} ${len}`);
    else if (r < 0.85) ops.push(`discard ${off} ${len}`);
    else ops.push(`write -P ${1 + pick(254)} ${off} ${Math.min(len * 4, SIZE - off)}`);
  }
  return ops;
}

function run(cmd: string, args: string[], cwd: string): void {
  execFileSync(cmd, args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

const KINDS: readonly Kind[] = [
  { name: 'v3 64k', create: 'compat=1.1', clusterSize: 65536, compressed: true },
  { name: 'v2 64k', create: 'compat=0.10', clusterSize: 65536, compressed: true },
  { name: 'v3 4k refcount_bits=1', create: 'cluster_size=4096,refcount_bits=1', clusterSize: 4096 },
  { name: 'v3 512B refcount_bits=64', create: 'cluster_size=512,refcount_bits=64', clusterSize: 512 },
  { name: 'extended l2 64k', create: 'extended_l2=on', clusterSize: 65536 },
  { name: 'zstd 64k', create: 'compression_type=zstd', clusterSize: 65536, compressed: true },
  { name: 'overlay on a backing chain', create: 'compat=1.1', clusterSize: 65536, backing: true },
  { name: 'extended l2 overlay', create: 'extended_l2=on', clusterSize: 65536, backing: true },
  { name: 'after an internal snapshot', create: 'cluster_size=4096', clusterSize: 4096, snapshot: true },
];

for (const [index, kind] of KINDS.entries()) {
  test(`random ops give the same image as qemu-io and check clean: ${kind.name}`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'vdisk-diff-'));
    try {
      const random = seededRandom(Number(process.env['VDISK_DIFF_SEED'] ?? 0xd1ff) + index);
      const createArgs = ['create', '-q', '-f', 'qcow2', '-o', kind.create];
      if (kind.backing) {
        run('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', `${SIZE}`], dir);
        run('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5b 0 ${SIZE / 2}`, '-c', `write -P 0x5c ${SIZE / 2 + 4096} 100k`, 'base.qcow2'], dir);
        createArgs.push('-b', 'base.qcow2', '-F', 'qcow2');
      }
      run('qemu-img', [...createArgs, 'ours.qcow2', `${SIZE}`], dir);
      if (kind.snapshot) {
        run('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x7a 0 ${SIZE / 2}`, 'ours.qcow2'], dir);
        run('qemu-img', ['snapshot', '-c', 'before', 'ours.qcow2'], dir);
      }
      copyFileSync(join(dir, 'ours.qcow2'), join(dir, 'theirs.qcow2'));
      const ops = randomOps(random, kind, Number(process.env['VDISK_DIFF_OPS'] ?? 40));
      const args = ops.flatMap((c) => ['-c', c]);
      // qemu-io goes on after a failing command (e.g. a compressed write onto an allocated cluster); so must vdisk io.
      spawnSync('qemu-io', ['-f', 'qcow2', ...args, 'theirs.qcow2'], { cwd: dir, stdio: 'ignore' });
      spawnSync(process.execPath, [VDISK, 'io', '-f', 'qcow2', ...args, 'ours.qcow2'], { cwd: dir, stdio: 'ignore' });
      const cmp = spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', 'ours.qcow2', 'theirs.qcow2'], { cwd: dir, encoding: 'utf8' });
      assert.equal(cmp.status, 0, `qemu-img compare: ${cmp.stdout}${cmp.stderr}\nops:\n${ops.join('\n')}`);
      // Allocation, not only content: the same ranges are data, zero or unallocated (host offsets may differ).
      const mapOf = (f: string): string => {
        const extents = JSON.parse(execFileSync('qemu-img', ['map', '--output=json', f], { cwd: dir, encoding: 'utf8' })) as Array<Record<string, unknown>>;
        const merged: Array<{ start: number; end: number; kind: string }> = [];
        for (const e of extents) {
          const kind = `present=${String(e['present'])} zero=${String(e['zero'])} data=${String(e['data'])} depth=${String(e['depth'])}`;
          const start = Number(e['start']);
          const last = merged[merged.length - 1];
          if (last && last.kind === kind && last.end === start) last.end = start + Number(e['length']);
          else merged.push({ start, end: start + Number(e['length']), kind });
        }
        return merged.map((m) => `${m.start}-${m.end} ${m.kind}`).join('\n');
      };
      assert.equal(mapOf('ours.qcow2'), mapOf('theirs.qcow2'), `qemu-img map differs\nops:\n${ops.join('\n')}`);
      const check = spawnSync('qemu-img', ['check', '--output=json', 'ours.qcow2'], { cwd: dir, encoding: 'utf8' });
      const report = JSON.parse(check.stdout) as Record<string, unknown>;
      assert.equal(report['corruptions'] ?? 0, 0, check.stdout);
      assert.equal(report['leaks'] ?? 0, 0, check.stdout);
      assert.equal(report['check-errors'] ?? 0, 0, check.stdout);
      if (kind.snapshot) {
        // The snapshot still holds what it held: apply it on both and compare again.
        run('qemu-img', ['snapshot', '-a', 'before', 'ours.qcow2'], dir);
        run('qemu-img', ['snapshot', '-a', 'before', 'theirs.qcow2'], dir);
        const again = spawnSync('qemu-img', ['compare', 'ours.qcow2', 'theirs.qcow2'], { cwd: dir, encoding: 'utf8' });
        assert.equal(again.status, 0, again.stdout);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('compressed data is never packed into a cluster that was freed and reused for data', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-diff-'));
  try {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', 'a.qcow2', '4M'], dir);
    const ops = ['write -c -P 1 0 64k', 'write -P 2 0 64k', 'write -P 3 1M 64k', 'write -c -P 4 2M 64k', 'read -P 3 1M 64k', 'read -P 4 2M 64k'];
    const io = spawnSync(process.execPath, [VDISK, 'io', '-f', 'qcow2', ...ops.flatMap((c) => ['-c', c]), 'a.qcow2'], { cwd: dir, encoding: 'utf8' });
    assert.equal(io.status, 0, io.stdout + io.stderr);
    assert.doesNotMatch(io.stdout, /Pattern verification failed/);
    const check = spawnSync('qemu-img', ['check', '--output=json', 'a.qcow2'], { cwd: dir, encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
