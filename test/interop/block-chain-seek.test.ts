import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImage, type ImageNode } from '../../src/block/index.js';
import { isVdiskError } from '../../src/errors.js';

const K = 1024;

function sh(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Holes as lseek sees them, from qemu-img map: a range is a hole when it reads as zeros. */
function qemuHoles(file: string, cwd: string): Array<{ start: number; end: number; hole: boolean }> {
  const out: Array<{ start: number; end: number; hole: boolean }> = [];
  for (const e of JSON.parse(sh('qemu-img', ['map', '--output=json', file], cwd)) as Array<Record<string, number | boolean>>) {
    const start = Number(e['start']);
    const end = start + Number(e['length']);
    const hole = e['zero'] === true;
    const last = out[out.length - 1];
    if (last && last.hole === hole && last.end === start) last.end = end;
    else out.push({ start, end, hole });
  }
  return out;
}

/** Walks the disk with seekData/seekHole the way `cp --sparse` does, giving the same run list. */
async function seekRuns(node: ImageNode): Promise<Array<{ start: number; end: number; hole: boolean }>> {
  const out: Array<{ start: number; end: number; hole: boolean }> = [];
  for (let pos = 0; pos < node.length; ) {
    let data: number;
    try {
      data = await node.seekData(pos);
    } catch (e) {
      if (!isVdiskError(e, 'ENXIO')) throw e;
      data = node.length;
    }
    if (data > pos) out.push({ start: pos, end: data, hole: true });
    if (data >= node.length) break;
    const hole = await node.seekHole(data);
    out.push({ start: data, end: hole, hole: false });
    pos = hole;
  }
  return out;
}

test('qcow2 over a raw backing file: reads equal qemu-img convert, and seek agrees with qemu-img map', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-seek-'));
  try {
    sh('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '2M'], dir);
    sh('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 64k 128k', '-c', 'write -P 0x12 1M 4k', 'base.raw'], dir);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'top.qcow2', '3M'], dir);
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x21 0 4k', '-c', 'write -z 64k 64k', '-c', 'write -P 0x22 2560k 8k', 'top.qcow2'], dir);
    sh('qemu-img', ['convert', '-O', 'raw', 'top.qcow2', 'expect.raw'], dir);
    const node = await openImage(join(dir, 'top.qcow2'), { readOnly: true });
    try {
      assert.equal(node.backing?.format, 'raw');
      const buf = new Uint8Array(node.length);
      await node.read(0, buf);
      assert.ok(Buffer.from(buf).equals(readFileSync(join(dir, 'expect.raw'))));
      assert.deepEqual(await seekRuns(node), qemuHoles('top.qcow2', dir));
      await assert.rejects(node.seekData(node.length), (e: unknown) => isVdiskError(e, 'ENXIO'));
      await assert.rejects(node.seekHole(node.length), (e: unknown) => isVdiskError(e, 'ENXIO'));
    } finally {
      await node.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('seek through an extended-L2 chain is subcluster-precise and agrees with qemu-img map', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-seek-'));
  try {
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', 'base.qcow2', '4M'], dir);
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x31 6k 2k', '-c', 'write -P 0x32 1M 64k', 'base.qcow2'], dir);
    sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', '4M'], dir);
    // 2 KiB subclusters: data, a zeroed subcluster over backing data, data past the backing's data.
    sh('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x41 2k 2k', '-c', 'write -z 1M 2k', '-c', 'write -P 0x42 3M 6k', 'top.qcow2'], dir);
    const node = await openImage(join(dir, 'top.qcow2'), { readOnly: true });
    try {
      const runs = await seekRuns(node);
      assert.deepEqual(runs, qemuHoles('top.qcow2', dir));
      // Boundaries fall inside 64 KiB clusters, at 2 KiB subcluster edges.
      assert.ok(runs.some((r) => r.start % (64 * K) !== 0 && r.start % (2 * K) === 0));
    } finally {
      await node.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
