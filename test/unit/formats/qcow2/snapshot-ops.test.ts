import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { describeSnapshot, findSnapshot, nextSnapshotId } from '../../../../src/formats/qcow2/snapshot-ops.js';
import type { Qcow2Snapshot } from '../../../../src/formats/qcow2/snapshot-table.js';

function sn(id: string, name: string, icount: bigint | null = 0n): Qcow2Snapshot {
  return {
    l1TableOffset: 0x10000,
    l1Size: 1,
    id,
    name,
    dateSec: 1,
    dateNsec: 2,
    vmClockNsec: 3_000_000_000n,
    vmStateSize: 0,
    vmStateSizeLarge: 5n,
    diskSize: 1n << 20n,
    icount,
    extraData: new Uint8Array(24),
  };
}

describe('snapshot-ops helpers', () => {
  it('gives a new snapshot the largest numeric id plus one (strtoul: leading digits, else 0)', () => {
    assert.equal(nextSnapshotId([]), '1');
    assert.equal(nextSnapshotId([sn('1', 'a'), sn('7', 'b'), sn('x', 'c'), sn('3abc', 'd')]), '8');
  });

  it('finds snapshots by id and/or name like find_snapshot_by_id_and_name', () => {
    const list = [sn('1', 'a'), sn('2', '1'), sn('3', 'a')];
    assert.equal(findSnapshot(list, { id: '1' }), 0);
    assert.equal(findSnapshot(list, { name: '1' }), 1);
    assert.equal(findSnapshot(list, { name: 'a' }), 0);
    assert.equal(findSnapshot(list, { id: '3', name: 'a' }), 2);
    assert.equal(findSnapshot(list, { id: '2', name: 'a' }), -1);
    assert.equal(findSnapshot(list, {}), -1);
  });

  it('describes an entry with the 64-bit VM state size and hides icount -1', () => {
    assert.deepEqual(describeSnapshot(sn('1', 'a')), { id: '1', name: 'a', vmStateSize: 5, dateSec: 1, dateNsec: 2, vmClockNsec: 3e9, icount: 0 });
    assert.equal(describeSnapshot(sn('1', 'a', -1n)).icount, undefined);
    assert.equal(describeSnapshot(sn('1', 'a', null)).icount, undefined);
  });
});
