/**
 * The internal snapshot table (qcow2.txt "Snapshots"): `nb_snapshots`
 * variable-length entries at `snapshots_offset`, each padded to 8 bytes.
 * vdisk does not create snapshots, but must read the table to account for the
 * snapshots' clusters (check, info) and to keep it intact.
 */
import { VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import { MAX_L1_BYTES } from './header.js';
import { decodeName, encodeName } from './extensions.js';

/** QEMU caps (qcow2.h): extra data per entry and the whole table. */
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;
export const MAX_SNAPSHOT_TABLE_BYTES = 1024 * 65536;
const FIXED = 40;

export interface Qcow2Snapshot {
  readonly l1TableOffset: number;
  readonly l1Size: number;
  readonly id: string;
  readonly name: string;
  readonly dateSec: number;
  readonly dateNsec: number;
  readonly vmClockNsec: bigint;
  /** The 32-bit field; superseded by vmStateSizeLarge when the extra data has it. */
  readonly vmStateSize: number;
  readonly vmStateSizeLarge: bigint | null;
  readonly diskSize: bigint | null;
  /** -1 when instruction counting was off; null when absent. */
  readonly icount: bigint | null;
  /** Raw extra data (QEMU keeps unknown trailing extra data). */
  readonly extraData: Uint8Array;
}

export interface SnapshotTableLocation {
  readonly file: string;
  readonly fileSize: number;
  readonly offset: number;
  readonly count: number;
}

function corrupt(file: string, message: string, offset: number, field: string): VdiskError {
  return new VdiskError('ECORRUPT', `Cannot open '${file}': ${message}`, { file, offset, field });
}

/**
 * Parses the snapshot table from `buf`, which holds the file bytes from
 * `loc.offset` on (at most MAX_SNAPSHOT_TABLE_BYTES are ever needed).
 * Returns the entries and the table's byte size.
 */
export function parseSnapshotTable(buf: Uint8Array, loc: SnapshotTableLocation): { snapshots: Qcow2Snapshot[]; size: number } {
  const { file } = loc;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const snapshots: Qcow2Snapshot[] = [];
  let pos = 0;
  for (let i = 0; i < loc.count; i++) {
    const at = loc.offset + pos;
    if (pos + FIXED > buf.length || at + FIXED > loc.fileSize) {
      throw corrupt(file, `snapshot table entry ${i} at ${hex(at)} extends past end of file (size ${hex(loc.fileSize)})`, at, 'snapshots_offset');
    }
    const l1Offset = view.getBigUint64(pos, false);
    const l1Size = view.getUint32(pos + 8, false);
    const idLen = view.getUint16(pos + 12, false);
    const nameLen = view.getUint16(pos + 14, false);
    const extraSize = view.getUint32(pos + 36, false);
    if (extraSize > MAX_SNAPSHOT_EXTRA_DATA) {
      throw corrupt(file, `too much extra metadata in snapshot table entry ${i} (${hex(extraSize)} bytes, at most ${hex(MAX_SNAPSHOT_EXTRA_DATA)})`, at + 36, 'extra_data_size');
    }
    const end = pos + FIXED + extraSize + idLen + nameLen;
    const padded = Math.ceil(end / 8) * 8;
    if (padded > MAX_SNAPSHOT_TABLE_BYTES) throw corrupt(file, `snapshot table is too big (entry ${i} ends at ${hex(padded)})`, at, 'nb_snapshots');
    if (end > buf.length || loc.offset + end > loc.fileSize) {
      throw corrupt(file, `snapshot table entry ${i} at ${hex(at)} extends past end of file (size ${hex(loc.fileSize)})`, at, 'snapshots_offset');
    }
    const extra = buf.slice(pos + FIXED, pos + FIXED + extraSize);
    const ev = new DataView(extra.buffer);
    const idStart = pos + FIXED + extraSize;
    snapshots.push({
      l1TableOffset: l1Offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(l1Offset),
      l1Size,
      id: decodeName(buf.subarray(idStart, idStart + idLen)),
      name: decodeName(buf.subarray(idStart + idLen, idStart + idLen + nameLen)),
      dateSec: view.getUint32(pos + 16, false),
      dateNsec: view.getUint32(pos + 20, false),
      vmClockNsec: view.getBigUint64(pos + 24, false),
      vmStateSize: view.getUint32(pos + 32, false),
      vmStateSizeLarge: extraSize >= 8 ? ev.getBigUint64(0, false) : null,
      diskSize: extraSize >= 16 ? ev.getBigUint64(8, false) : null,
      icount: extraSize >= 24 ? ev.getBigInt64(16, false) : null,
      extraData: extra,
    });
    pos = padded;
  }
  return { snapshots, size: pos };
}

export interface SnapshotProblem {
  readonly index: number;
  readonly message: string;
}

/**
 * What is wrong with a snapshot's L1 table reference, in qemu-img check's words
 * ("ERROR snapshot <id> (<name>) l1_offset=...: L1 table is not cluster aligned;
 * snapshot table entry corrupted"), or null.
 */
export function snapshotL1Problem(sn: Qcow2Snapshot, g: { clusterSize: number; fileSize: number }): string | null {
  if (sn.l1TableOffset % g.clusterSize !== 0) {
    return `ERROR snapshot ${sn.id} (${sn.name}) l1_offset=${hex(sn.l1TableOffset)}: L1 table is not cluster aligned; snapshot table entry corrupted`;
  }
  if (sn.l1Size > MAX_L1_BYTES / 8) {
    return `ERROR snapshot ${sn.id} (${sn.name}) l1_size=${hex(sn.l1Size)}: L1 table is too large; snapshot table entry corrupted`;
  }
  if (sn.l1Size > 0 && sn.l1TableOffset + sn.l1Size * 8 > g.fileSize) {
    return `ERROR snapshot ${sn.id} (${sn.name}) l1_offset=${hex(sn.l1TableOffset)}: L1 table extends past end of file (size ${hex(g.fileSize)})`;
  }
  return null;
}

/** Encodes the table as QEMU's qcow2_write_snapshots does (entries padded to 8 bytes). */
export function serializeSnapshotTable(snapshots: readonly Qcow2Snapshot[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const sn of snapshots) {
    const id = encodeName(sn.id);
    const name = encodeName(sn.name);
    const extra = sn.extraData;
    const len = Math.ceil((FIXED + extra.length + id.length + name.length) / 8) * 8;
    const out = new Uint8Array(len);
    const v = new DataView(out.buffer);
    v.setBigUint64(0, BigInt(sn.l1TableOffset), false);
    v.setUint32(8, sn.l1Size, false);
    v.setUint16(12, id.length, false);
    v.setUint16(14, name.length, false);
    v.setUint32(16, sn.dateSec, false);
    v.setUint32(20, sn.dateNsec, false);
    v.setBigUint64(24, sn.vmClockNsec, false);
    v.setUint32(32, sn.vmStateSize, false);
    v.setUint32(36, extra.length, false);
    out.set(extra, FIXED);
    out.set(id, FIXED + extra.length);
    out.set(name, FIXED + extra.length + id.length);
    parts.push(out);
  }
  const total = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    total.set(p, pos);
    pos += p.length;
  }
  return total;
}
