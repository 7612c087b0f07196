import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseHeaderCluster } from '../../../../src/formats/qcow2/header.js';
import { parseCreateSettings, planQcow2Layout } from '../../../../src/formats/qcow2/create.js';
import { VdiskError } from '../../../../src/errors.js';
import { seededRandom } from '../../../support/seeded-random.js';


// Headers as qemu-img writes them (create.ts is checked byte-identical to qemu-img by the interop tests).
const SEEDS: ReadonlyArray<Record<string, string>> = [
  {},
  { compat: '0.10' },
  { cluster_size: '512' },
  { extended_l2: 'on', compression_type: 'zstd', lazy_refcounts: 'on' },
  { data_file: 'data.raw', data_file_raw: 'on' },
  { backing_file: 'base.qcow2', backing_fmt: 'qcow2', cluster_size: '4096' },
];

test('parseHeaderCluster returns or throws a VdiskError for thousands of mutated headers', () => {
  const random = seededRandom(0x5eed);
  const bases = SEEDS.map((options) => {
    const layout = planQcow2Layout(parseCreateSettings({ size: 1 << 30, options }));
    return { bytes: layout.clusters.get(0) ?? new Uint8Array(512), fileSize: layout.fileLength };
  });
  let accepted = 0;
  const started = Date.now();
  for (let iter = 0; iter < 4000; iter++) {
    const base = bases[iter % bases.length];
    assert.ok(base !== undefined);
    // Only the interesting prefix is mutated; the cluster itself stays its size.
    const buf = base.bytes.slice(0, Math.min(base.bytes.length, 4096));
    const edits = 1 + Math.floor(random() * 8);
    for (let e = 0; e < edits; e++) {
      const r = random();
      const hot = random() < 0.7;
      const pos = Math.floor(random() * (hot ? Math.min(buf.length, 0x200) : buf.length));
      if (r < 0.5) buf[pos] = Math.floor(random() * 256);
      else if (r < 0.75) buf[pos] = (buf[pos] ?? 0) ^ (1 << Math.floor(random() * 8));
      else if (pos + 4 <= buf.length) new DataView(buf.buffer).setUint32(pos, [0, 0xffffffff, 0x80000000, 1, 104, 112, 9, 21][Math.floor(random() * 8)] ?? 0);
    }
    const fileSize = random() < 0.1 ? Math.floor(random() * 0x100000) : base.fileSize;
    const truncated = random() < 0.05 ? buf.subarray(0, Math.floor(random() * buf.length)) : buf;
    try {
      parseHeaderCluster(truncated, { file: 'fuzz.qcow2', fileSize });
      accepted++;
    } catch (e) {
      if (!(e instanceof VdiskError)) throw new Error(`iteration ${iter}: non-VdiskError ${String(e)}`, { cause: e });
    }
  }
  assert.ok(accepted > 0, 'some mutations keep the header valid');
  assert.ok(Date.now() - started < 20000, 'fuzzing stays fast');
});
