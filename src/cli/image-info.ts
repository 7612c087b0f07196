import type { FormatInfo, JsonValue, SnapshotInfo } from '../formats/driver.js';
import { imgSizeText } from './format/size-text.js';
import { qemuFormatName } from './format-name.js';
import { qemuHumanDump } from './format/qemu-json.js';
import { resolveBackingPath } from './image-path.js';
import { statPath } from '../host/fs-calls.js';

/** What qemu-img info reports about one image of a chain. */
export interface ImageReport {
  readonly filename: string;
  readonly info: FormatInfo;
  /** Bytes the host file occupies (st_blocks * 512), when known. */
  readonly actualSize: number | undefined;
}

/** The host file's allocated bytes, as "disk size" / "actual-size" show them. */
export async function allocatedBytes(path: string): Promise<number | undefined> {
  try {
    const st = await statPath(path);
    return st.blocks * 512;
  } catch {
    return undefined;
  }
}

/** qemu's order for the qcow2 format-specific keys (a driver may build them in another order). */
const QCOW2_SPECIFIC_ORDER = ['compat', 'compression-type', 'lazy-refcounts', 'bitmaps', 'refcount-bits', 'data-file', 'data-file-raw', 'encrypt', 'corrupt', 'extended-l2'];

export function orderedSpecific(type: string, data: { readonly [key: string]: JsonValue }): { [key: string]: JsonValue } {
  const out: { [key: string]: JsonValue } = {};
  if (type === 'qcow2') {
    for (const k of QCOW2_SPECIFIC_ORDER) {
      const v = data[k];
      if (v !== undefined) out[k] = v;
    }
  }
  for (const [k, v] of Object.entries(data)) if (!(k in out)) out[k] = v;
  return out;
}

function snapshotJson(s: SnapshotInfo): JsonValue {
  const out: { [key: string]: JsonValue } = {};
  if (s.icount !== undefined) out.icount = s.icount;
  out['vm-clock-nsec'] = s.vmClockNsec % 1e9;
  out.name = s.name;
  out['date-sec'] = s.dateSec;
  out['date-nsec'] = s.dateNsec;
  out['vm-clock-sec'] = Math.floor(s.vmClockNsec / 1e9);
  out.id = s.id;
  out['vm-state-size'] = s.vmStateSize;
  return out;
}

/** The ImageInfo object of `qemu-img info --output=json`, keys in qemu-img 7.2's order. */
export function imageInfoJson(r: ImageReport): JsonValue {
  const { info } = r;
  const out: { [key: string]: JsonValue } = {};
  if (info.snapshots && info.snapshots.length > 0) out.snapshots = info.snapshots.map(snapshotJson);
  if (info.backing?.format) out['backing-filename-format'] = qemuFormatName(info.backing.format);
  out['virtual-size'] = info.virtualSize;
  out.filename = r.filename;
  if (info.clusterSize !== undefined) out['cluster-size'] = info.clusterSize;
  out.format = qemuFormatName(info.format);
  if (r.actualSize !== undefined) out['actual-size'] = r.actualSize;
  if (info.encrypted) out.encrypted = true;
  if (info.formatSpecific) {
    out['format-specific'] = { type: info.formatSpecific.type, data: orderedSpecific(info.formatSpecific.type, info.formatSpecific.data) };
  }
  if (info.backing) {
    out['full-backing-filename'] = resolveBackingPath(r.filename, info.backing.filename);
    out['backing-filename'] = info.backing.filename;
  }
  out['dirty-flag'] = info.dirtyFlag ?? false;
  return out;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** One row of qemu's snapshot table (bdrv_snapshot_dump); dates in local time. */
export function snapshotRow(s: SnapshotInfo): string {
  const d = new Date(s.dateSec * 1000);
  const date = `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  const totalMs = Math.floor(s.vmClockNsec / 1e6);
  const secs = Math.floor(totalMs / 1000);
  const clock = `${pad2(Math.floor(secs / 3600))}:${pad2(Math.floor(secs / 60) % 60)}:${pad2(secs % 60)}.${String(totalMs % 1000).padStart(3, '0')}`;
  const icount = s.icount === undefined ? '' : String(s.icount);
  return `${s.id.padEnd(9)} ${s.name.padEnd(16)} ${imgSizeText(s.vmStateSize).padStart(8)}${date.padStart(20)}${clock.padStart(13)}${icount.padStart(11)}\n`;
}

export const SNAPSHOT_HEADER = `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}\n`;

/** The human form of `qemu-img info` for one image. */
export function imageInfoHuman(r: ImageReport): string {
  const { info } = r;
  let out = `image: ${r.filename}\nfile format: ${qemuFormatName(info.format)}\n`;
  out += `virtual size: ${imgSizeText(info.virtualSize)} (${info.virtualSize} bytes)\n`;
  out += `disk size: ${r.actualSize === undefined ? 'unavailable' : imgSizeText(r.actualSize)}\n`;
  if (info.encrypted) out += 'encrypted: yes\n';
  if (info.clusterSize !== undefined) out += `cluster_size: ${info.clusterSize}\n`;
  if (info.dirtyFlag) out += 'dirty flag: yes\n';
  if (info.backing) {
    const full = resolveBackingPath(r.filename, info.backing.filename);
    out += `backing file: ${info.backing.filename}${full !== info.backing.filename ? ` (actual path: ${full})` : ''}\n`;
    if (info.backing.format) out += `backing file format: ${qemuFormatName(info.backing.format)}\n`;
  }
  if (info.snapshots && info.snapshots.length > 0) {
    out += `Snapshot list:\n${SNAPSHOT_HEADER}${info.snapshots.map(snapshotRow).join('')}`;
  }
  if (info.formatSpecific) {
    out += `Format specific information:\n${qemuHumanDump(orderedSpecific(info.formatSpecific.type, info.formatSpecific.data), 1)}`;
  }
  return out;
}

