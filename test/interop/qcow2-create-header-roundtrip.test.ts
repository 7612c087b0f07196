import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { parseHeaderCluster, serializeHeaderCluster, clusterSizeOf } from '../../src/formats/qcow2/header.js';

// Option sets for qemu-img create; each image's cluster 0 must survive parse → serialize unchanged.
const COMBOS: readonly string[][] = [
  [],
  ['-o', 'compat=0.10'],
  ['-o', 'cluster_size=512'],
  ['-o', 'cluster_size=4096'],
  ['-o', 'cluster_size=8192'],
  ['-o', 'cluster_size=2M'],
  ['-o', 'cluster_size=512,compat=0.10'],
  ['-o', 'refcount_bits=1'],
  ['-o', 'refcount_bits=64'],
  ['-o', 'lazy_refcounts=on'],
  ['-o', 'extended_l2=on'],
  ['-o', 'compression_type=zstd'],
  ['-o', 'data_file=DATA,data_file_raw=on'],
  ['-o', 'data_file=DATA'],
  ['-b', 'BASE', '-F', 'qcow2'],
  ['-b', 'BASE', '-F', 'qcow2', '-o', 'compat=0.10'],
  ['-b', 'BASE', '-F', 'qcow2', '-o', 'cluster_size=512'],
];

test('parse then serialize reproduces cluster 0 of qemu-img created images byte for byte', () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, '1G']);
    COMBOS.forEach((combo, i) => {
      const path = `${dir}/img${i}.qcow2`;
      const args = combo.map((a) => a.replace('DATA', `${dir}/data${i}.raw`).replace('BASE', `${dir}/base.qcow2`));
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, path, '1G']);
      const bytes = fs.readFileSync(path);
      const parsed = parseHeaderCluster(bytes, { file: path, fileSize: bytes.length });
      const cs = clusterSizeOf(parsed.header);
      const again = serializeHeaderCluster(parsed, cs);
      assert.deepEqual(Buffer.from(again), bytes.subarray(0, cs), `combo ${combo.join(' ')}`);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
