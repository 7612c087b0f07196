/**
 * The qcow2 bulk write (convert's data into a fresh image, read and written
 * on the addon's threads): clusters with data are allocated and hold the
 * runs, clusters of zeros stay unallocated, the image checks clean; an image
 * it cannot take so is declined with nothing written. qemu-img is the oracle.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { openImage } from '../../../../src/block/open.js';
import { HostCopyError } from '../../../../src/host/host-file.js';
import { nativeHost } from '../../../../src/host/native.js';
import { NodeHostFile } from '../../../../src/host/node-file.js';
import { qemuCheck, qemuImg, qemuIo, qemuRaw } from '../../../interop/qcow2-helpers.js';
import { withDir } from '../../../support/temp-dir.js';

const KiB = 1024;
const MiB = 1024 * KiB;

interface MapEntry {
  readonly start: number;
  readonly length: number;
  readonly data: boolean;
}

function dataRanges(file: string): Array<[number, number]> {
  const map = JSON.parse(qemuImg('map', '--output=json', file)) as MapEntry[];
  return map.filter((e) => e.data).map((e) => [e.start, e.start + e.length]);
}

test(
  'runs land in fresh clusters over several L2 tables and more parts than buffers; clusters of zeros stay unallocated; the image checks clean',
  withDir(async (dir) => {
    assert.ok(nativeHost()?.copyRunsPacked, 'the addon is built with copyRunsPacked');
    // 56 MiB: many more clusters than the engine's four 2 MiB buffers hold, so the reader waits for the writer.
    const size = 56 * MiB + 3 * KiB;
    const src = randomBytes(size);
    src.fill(0, 40 * KiB, 48 * KiB); // two whole clusters of zeros inside a run
    src.fill(0, 100 * KiB, 102 * KiB); // half a cluster of zeros: the cluster holds data
    fs.writeFileSync(path.join(dir, 'src.raw'), src);
    // 4 KiB clusters: an L2 table maps 2 MiB, so one group of the engine spans many tables.
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', path.join(dir, 't.qcow2'), String(size));
    const source = await NodeHostFile.open(path.join(dir, 'src.raw'), { readOnly: true });
    const node = await openImage(path.join(dir, 't.qcow2'));
    const runs = [
      // Unaligned starts and ends: the clusters around them are written whole, zeros filled in.
      { offset: 1000, src: { file: source, offset: 1000, length: 200 * KiB } },
      { offset: 300 * KiB + 17, src: { file: source, offset: 300 * KiB + 17, length: 9 * MiB } },
      // Starts in the cluster where the run before ends.
      { offset: 300 * KiB + 17 + 9 * MiB, src: { file: source, offset: 300 * KiB + 17 + 9 * MiB, length: 5 * MiB } },
      // To the disk's end, which is inside a cluster.
      { offset: 20 * MiB, src: { file: source, offset: 20 * MiB, length: size - 20 * MiB } },
    ];
    const written = await node.writeRunsFromHost(runs, 4096);
    assert.ok(written !== null && written > 0, 'taken in bulk');
    await node.close();
    await source.close();
    const want = Buffer.alloc(size);
    for (const r of runs) src.copy(want, r.offset, r.offset, r.offset + r.src.length);
    assert.deepEqual(qemuRaw(path.join(dir, 't.qcow2')), want);
    const check = qemuCheck(path.join(dir, 't.qcow2'));
    assert.equal(check.corruptions ?? 0, 0);
    assert.equal(check.leaks ?? 0, 0);
    const ranges = dataRanges(path.join(dir, 't.qcow2'));
    assert.ok(ranges.some(([a, b]) => a <= 96 * KiB && b >= 104 * KiB), 'the cluster with half zeros holds data');
    assert.ok(!ranges.some(([a, b]) => a < 48 * KiB && b > 40 * KiB), 'the clusters of zeros are not allocated');
    assert.ok(!ranges.some(([a, b]) => a < 300 * KiB && b > 204 * KiB), 'nothing between the runs is allocated');
  }),
);

test(
  'an image it cannot take so is declined with nothing written: extended L2, a backing file, a cluster already allocated, a zero block that does not divide the cluster',
  withDir(async (dir) => {
    const data = randomBytes(MiB);
    fs.writeFileSync(path.join(dir, 'src.raw'), data);
    const source = await NodeHostFile.open(path.join(dir, 'src.raw'), { readOnly: true });
    const runs = [{ offset: 0, src: { file: source, offset: 0, length: MiB } }];
    const img = (name: string): string => path.join(dir, name);
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', img('ext.qcow2'), '4M');
    qemuImg('create', '-q', '-f', 'qcow2', img('base.qcow2'), '4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', img('base.qcow2'), '-F', 'qcow2', img('top.qcow2'));
    qemuImg('create', '-q', '-f', 'qcow2', img('used.qcow2'), '4M');
    qemuIo(img('used.qcow2'), 'write -P 9 512k 4k');
    qemuImg('create', '-q', '-f', 'qcow2', img('plain.qcow2'), '4M');
    for (const [name, zeroBlock] of [['ext.qcow2', 4096], ['top.qcow2', 4096], ['used.qcow2', 4096], ['plain.qcow2', 3 * 4096]] as const) {
      const before = fs.readFileSync(img(name));
      const node = await openImage(img(name));
      assert.equal(await node.writeRunsFromHost(runs, zeroBlock), null, name);
      await node.close();
      assert.deepEqual(fs.readFileSync(img(name)).subarray(before.length), Buffer.alloc(0), `${name}: nothing appended`);
      assert.equal(qemuCheck(img(name)).corruptions ?? 0, 0);
    }
    await source.close();
  }),
);

test(
  'runs over a table that exists are checked cluster by cluster across runs: one allocated cluster in a later run declines them all; clusters only flagged zero do not',
  withDir(async (dir) => {
    const data = randomBytes(MiB);
    fs.writeFileSync(path.join(dir, 'src.raw'), data);
    const source = await NodeHostFile.open(path.join(dir, 'src.raw'), { readOnly: true });
    const runs = [0, 1, 2].map((i) => ({ offset: i * 2 * MiB + 64 * 1024, src: { file: source, offset: i * 256 * 1024, length: 256 * 1024 } }));
    const img = (name: string): string => path.join(dir, name);
    qemuImg('create', '-q', '-f', 'qcow2', img('used.qcow2'), '8M');
    qemuIo(img('used.qcow2'), 'write -P 9 4160k 4k');
    qemuImg('create', '-q', '-f', 'qcow2', img('zeroed.qcow2'), '8M');
    qemuIo(img('zeroed.qcow2'), 'write -P 9 7M 64k');
    qemuIo(img('zeroed.qcow2'), 'write -z 4160k 64k');
    const used = await openImage(img('used.qcow2'));
    assert.equal(await used.writeRunsFromHost(runs, 4096), null, 'the third run meets the allocated cluster');
    await used.close();
    const zeroed = await openImage(img('zeroed.qcow2'));
    assert.equal(await zeroed.writeRunsFromHost(runs, 4096), 3 * 256 * 1024);
    await zeroed.close();
    assert.equal(qemuCheck(img('zeroed.qcow2')).corruptions ?? 0, 0);
    const expected = Buffer.alloc(8 * MiB);
    runs.forEach((r) => data.copy(expected, r.offset, r.src.offset, r.src.offset + r.src.length));
    expected.fill(9, 7 * MiB, 7 * MiB + 64 * 1024);
    assert.deepEqual(qemuRaw(img('zeroed.qcow2')), expected);
    await source.close();
  }),
);

test(
  'a failing read is reported at its guest offset, and the image stays usable',
  withDir(async (dir) => {
    fs.mkdirSync(path.join(dir, 'sub'));
    const bad = await NodeHostFile.open(path.join(dir, 'sub'), { readOnly: true });
    qemuImg('create', '-q', '-f', 'qcow2', path.join(dir, 't.qcow2'), '64M');
    const node = await openImage(path.join(dir, 't.qcow2'));
    await assert.rejects(node.writeRunsFromHost([{ offset: 9 * MiB + 512, src: { file: bad, offset: 0, length: 64 * KiB } }], 4096), (e: unknown) => {
      assert.ok(e instanceof HostCopyError);
      assert.equal(e.side, 'read');
      assert.equal(e.at, 9 * MiB + 512);
      return true;
    });
    await node.write(0, new Uint8Array(4096).fill(5));
    await node.close();
    await bad.close();
    assert.equal(qemuCheck(path.join(dir, 't.qcow2')).corruptions ?? 0, 0);
    assert.deepEqual(qemuRaw(path.join(dir, 't.qcow2')).subarray(0, 4096), Buffer.alloc(4096, 5));
  }),
);

test(
  'the clusters of zeros at the end of a group are given back and the next group continues right after its data: the image ends where qemu-img ends it',
  withDir(async (dir) => {
    // 4 KiB clusters: a group is 64 MiB of guest, so data at 64 MiB goes in a second engine call.
    const size = 66 * MiB;
    const data = randomBytes(size);
    data.fill(0, MiB, 2 * MiB); // the end of the first group's runs reads as zeros: 256 clusters given back
    data.fill(0, 2 * MiB, 64 * MiB); // a hole between the runs, never read
    fs.writeFileSync(path.join(dir, 'src.raw'), data);
    const source = await NodeHostFile.open(path.join(dir, 'src.raw'), { readOnly: true });
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', path.join(dir, 't.qcow2'), String(size));
    const node = await openImage(path.join(dir, 't.qcow2'));
    const runs = [
      { offset: 0, src: { file: source, offset: 0, length: 2 * MiB } },
      { offset: 64 * MiB, src: { file: source, offset: 64 * MiB, length: 2 * MiB } },
    ];
    assert.equal(await node.writeRunsFromHost(runs, 4096), 3 * MiB, 'the clusters with data, in bytes');
    await node.close();
    await source.close();
    const want = Buffer.alloc(size);
    data.copy(want, 0, 0, 2 * MiB);
    data.copy(want, 64 * MiB, 64 * MiB);
    assert.deepEqual(qemuRaw(path.join(dir, 't.qcow2')), want);
    const ours = qemuCheck(path.join(dir, 't.qcow2'));
    assert.equal(ours.corruptions ?? 0, 0);
    assert.equal(ours.leaks ?? 0, 0);
    // qemu-img's convert of the same guest: no cluster of zeros allocated, nothing left between.
    fs.writeFileSync(path.join(dir, 'want.raw'), want);
    qemuImg('convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', path.join(dir, 'want.raw'), path.join(dir, 'q.qcow2'));
    assert.equal(ours['image-end-offset'], qemuCheck(path.join(dir, 'q.qcow2'))['image-end-offset']);
    const map = JSON.parse(qemuImg('map', '--output=json', path.join(dir, 't.qcow2'))) as Array<MapEntry & { offset?: number }>;
    const first = map.find((e) => e.start === 0);
    const second = map.find((e) => e.start === 64 * MiB);
    // The second group's new L2 table takes the cluster after the first group's last data cluster, its data the ones after.
    assert.equal(second?.offset, (first?.offset ?? 0) + MiB + 4096);
  }),
);
