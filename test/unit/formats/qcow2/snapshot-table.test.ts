import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSnapshotTable, serializeSnapshotTable, snapshotL1Problem, type Qcow2Snapshot } from '../../../../src/formats/qcow2/snapshot-table.js';
import { isVdiskError } from '../../../../src/errors.js';

const extra = new Uint8Array(24);
new DataView(extra.buffer).setBigUint64(8, 1n << 30n);
new DataView(extra.buffer).setBigInt64(16, -1n);
const SNAP: Qcow2Snapshot = {
  l1TableOffset: 0x50000,
  l1Size: 2,
  id: '1',
  name: 'before-upgrade',
  dateSec: 1700000000,
  dateNsec: 5,
  vmClockNsec: 0n,
  vmStateSize: 0,
  vmStateSizeLarge: 0n,
  diskSize: 1n << 30n,
  icount: -1n,
  extraData: extra,
};

test('snapshot table entries round-trip, padded to 8 bytes', () => {
  const bytes = serializeSnapshotTable([SNAP, { ...SNAP, id: '2', name: 'x' }]);
  assert.equal(bytes.length % 8, 0);
  const { snapshots, size } = parseSnapshotTable(bytes, { file: 'a.qcow2', fileSize: 0x100000, offset: 0x60000, count: 2 });
  assert.equal(size, bytes.length);
  assert.deepEqual(snapshots[0], SNAP);
  assert.equal(snapshots[1]?.name, 'x');
});

test('entries past the end of the file or with too much extra data are refused', () => {
  const bytes = serializeSnapshotTable([SNAP]);
  assert.throws(() => parseSnapshotTable(bytes, { file: 'a.qcow2', fileSize: 0x60010, offset: 0x60000, count: 1 }), (e) => isVdiskError(e, 'ECORRUPT'));
  assert.throws(() => parseSnapshotTable(bytes, { file: 'a.qcow2', fileSize: 0x100000, offset: 0x60000, count: 2 }), (e) => isVdiskError(e, 'ECORRUPT'));
  const big = bytes.slice();
  new DataView(big.buffer).setUint32(36, 2048);
  assert.throws(() => parseSnapshotTable(big, { file: 'a.qcow2', fileSize: 0x100000, offset: 0x60000, count: 1 }), /too much extra metadata/);
});

test('a snapshot L1 table must be aligned and inside the file', () => {
  assert.equal(snapshotL1Problem(SNAP, { clusterSize: 0x10000, fileSize: 0x100000 }), null);
  assert.match(snapshotL1Problem({ ...SNAP, l1TableOffset: 0x50200 }, { clusterSize: 0x10000, fileSize: 0x100000 }) ?? '', /L1 table is not cluster aligned/);
  assert.match(snapshotL1Problem(SNAP, { clusterSize: 0x10000, fileSize: 0x50008 }) ?? '', /extends past end of file/);
});
