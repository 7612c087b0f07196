// qcow2 <-> ploop conversion through `vdisk convert`: same content as qemu-img's conversion and the
// same clusters allocated (holes and zero clusters are never written).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { vdisk } from './cli-oracle.js';
import { ok, withDir } from './ploop-helpers.js';

interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
}

/** The data extents of an image, as qemu-img map reports them. */
function dataMap(format: string, file: string): Array<[number, number]> {
  const entries = JSON.parse(ok('qemu-img', ['map', '--output=json', '-f', format, file])) as MapEntry[];
  const out: Array<[number, number]> = [];
  for (const e of entries) {
    if (!e.data) continue;
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === e.start) last[1] += e.length;
    else out.push([e.start, e.length]);
  }
  return out;
}

const SOURCE_WRITES = ['write -P 0x61 0 64k', 'write -P 0x62 1M 100k', 'write -z 2M 512k', 'write -P 0 3M 64k', 'write -P 0x63 5M 4k'];

test(
  'qcow2 -> ploop: vdisk allocates exactly the clusters qemu-img does and the content is the same',
  withDir(async (dir) => {
    const src = join(dir, 'src.qcow2');
    ok('qemu-img', ['create', '-q', '-f', 'qcow2', src, '8M']);
    for (const c of SOURCE_WRITES) ok('qemu-io', ['-f', 'qcow2', '-c', c, src]);
    const ours = join(dir, 'ours.hds');
    const theirs = join(dir, 'theirs.hds');
    const r = await vdisk(dir, ['convert', '-O', 'parallels', src, ours]);
    assert.equal(r.status, 0, r.stderr);
    ok('qemu-img', ['convert', '-O', 'parallels', src, theirs]);
    ok('qemu-img', ['check', '-f', 'parallels', ours]);
    ok('qemu-img', ['compare', '-f', 'parallels', '-F', 'parallels', ours, theirs]);
    assert.deepEqual(dataMap('parallels', ours), dataMap('parallels', theirs));
  }),
);

test(
  'ploop -> qcow2: vdisk allocates exactly the clusters qemu-img does and the content is the same',
  withDir(async (dir) => {
    const src = join(dir, 'src.hds');
    ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', src, '8M']);
    for (const c of SOURCE_WRITES) ok('qemu-io', ['-f', 'parallels', '-c', c, src]);
    const ours = join(dir, 'ours.qcow2');
    const theirs = join(dir, 'theirs.qcow2');
    const r = await vdisk(dir, ['convert', '-f', 'ploop', '-O', 'qcow2', src, ours]);
    assert.equal(r.status, 0, r.stderr);
    ok('qemu-img', ['convert', '-f', 'parallels', '-O', 'qcow2', src, theirs]);
    ok('qemu-img', ['check', '-f', 'qcow2', ours]);
    ok('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ours, theirs]);
    assert.deepEqual(dataMap('qcow2', ours), dataMap('qcow2', theirs));
  }),
);
