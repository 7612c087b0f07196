import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compatWarnings } from '../../../src/cli/compat-warnings.js';
import { synopsisCommands } from '../../../src/cli/help-text.js';
import { DataClusterCounter, qcow2BitmapsSize, qcow2FullyAllocatedSize } from '../../../src/cli/measure-size.js';
import { commandNames, run } from '../../../src/cli/program.js';

test('--help has a synopsis line for every subcommand vdisk dispatches', async () => {
  let out = '';
  assert.equal(await run(['--help'], { out: { stdout: (t) => void (out += t), stderr: () => undefined } }), 0);
  const listed = synopsisCommands();
  for (const name of commandNames()) {
    assert.ok(listed.includes(name), `--help lacks ${name}`);
    assert.match(out, new RegExp(`^  ${name} `, 'm'));
  }
});

test('extended_l2=on and compression_type=zstd each give one warning line; other options none', () => {
  assert.deepEqual(compatWarnings('qcow2', { extended_l2: 'on', compression_type: 'zstd' }), [
    'vdisk: warning: extended_l2=on: images with extended L2 entries need QEMU 5.2 or later\n',
    'vdisk: warning: compression_type=zstd: zstd-compressed images need QEMU 5.1 or later\n',
  ]);
  assert.deepEqual(compatWarnings('qcow2', { extended_l2: 'off', compression_type: 'zlib' }), []);
  assert.deepEqual(compatWarnings('raw', { extended_l2: 'on' }), []);
});

test('measure arithmetic: fully allocated qcow2 sizes and bitmaps as qemu-img 7.2 prints them', () => {
  const g = { clusterSize: 65536, refcountOrder: 4, extendedL2: false };
  assert.equal(qcow2FullyAllocatedSize(1 << 30, g), 1074135040);
  assert.equal(qcow2FullyAllocatedSize(1 << 30, { ...g, extendedL2: true }), 1074266112);
  assert.equal(qcow2FullyAllocatedSize(1 << 30, { ...g, clusterSize: 4096 }), 1076379648);
  assert.equal(qcow2BitmapsSize([{ name: 'b0', granularity: 65536 }], 100 * 1024 * 1024, 65536), 196608);
  assert.equal(qcow2BitmapsSize([], 100 * 1024 * 1024, 65536), 0);
});

test('data clusters are counted once each, widened to whole clusters', () => {
  const c = new DataClusterCounter(65536);
  c.add(0, 1024);
  c.add(4096, 1024); // same cluster
  c.add(65536 + 100, 65536); // spans two clusters
  assert.equal(c.total, 3 * 65536);
});
