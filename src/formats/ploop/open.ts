/**
 * The ploop open sequence, apart from the driver's I/O paths: read and validate
 * header and BAT, refuse a corrupt BAT, load (and for a writer apply the
 * keep/drop rule to) the format extension, repair an image left in use, and
 * mark the image in use. Everything here runs before the driver serves any
 * request, so it needs none of the driver's locks except BAT page 0's.
 */
import { VdiskError } from '../../errors.js';
import type { HostFile } from '../../host/host-file.js';
import { hex } from '../../util/int64.js';
import type { DriverOpenOptions } from '../registry-types.js';
import { BatTable } from './bat-table.js';
import { scanBat, type BatProblem } from './bat-scan.js';
import { checkImage } from './check.js';
import { encodeExtension, parseExtension, planForWriter } from './extension.js';
import { decodeHeader, HEADER_SIZE, INUSE_MAGIC, SECTOR } from './header.js';
import { batEntryOffset, layoutOf, type PloopLayout } from './layout.js';
import { FileGrowth } from '../file-growth.js';
import { setHeader, type PloopState } from './state.js';

/** An image as read from disk: its state, and the BAT entries found bad. */
export interface ReadImage {
  readonly state: PloopState;
  readonly problems: readonly BatProblem[];
}

/** Reads and validates header and BAT; nothing is written. */
export async function readImage(host: HostFile, path: string): Promise<ReadImage> {
  const size = await host.size();
  const head = new Uint8Array(Math.min(HEADER_SIZE, size));
  await host.read(head, 0);
  const header = decodeHeader(head, path);
  const layout = layoutOf(header, size, path);
  const bytes = new Uint8Array(layout.batEnd);
  await host.read(bytes, 0);
  const bat = new BatTable(bytes);
  const scan = scanBat(layout, (i) => bat.entry(i), size);
  const state: PloopState = {
    filename: path,
    host,
    header,
    layout,
    bat,
    dataEnd: scan.dataEnd,
    growth: host.readOnly ? null : new FileGrowth(host, size, layout.clusterSize),
    badEntries: new Set(scan.problems.map((p) => p.index)),
    unclean: header.inUse === INUSE_MAGIC,
    extHost: 0,
  };
  return { state, problems: scan.problems };
}

/**
 * Completes an open after `readImage`: refuses bad BAT entries unless a repair
 * runs now or `noRepair` leaves it to an explicit check, loads the format
 * extension, and for a writer repairs an unclean image and marks it in use.
 */
export async function finishOpen(image: ReadImage, options: DriverOpenOptions): Promise<void> {
  const s = image.state;
  const repairNow = !options.readOnly && s.unclean && options.noRepair !== true;
  const p = image.problems[0];
  if (p && !repairNow && options.noRepair !== true) {
    throw new VdiskError(
      'ECORRUPT',
      `Cannot open '${s.filename}': BAT entry ${p.index} points to ${hex(p.hostOffset)}, ${problemWhy(p, s.layout)}`,
      { file: s.filename, offset: batEntryOffset(p.index), field: `bat[${p.index}]` },
    );
  }
  if (s.header.extOff !== 0) await loadExtension(s, !options.readOnly);
  if (options.readOnly) return;
  if (repairNow) await checkImage(s, 'all');
  await s.bat.lock(0).run(async () => {
    setHeader(s, { ...s.header, inUse: INUSE_MAGIC });
    await s.host.write(s.bat.bytes.subarray(0, HEADER_SIZE), 0);
    await s.host.sync();
  });
}

/** Reads (and, for a writer, applies the keep/drop rule to) the format-extension cluster. */
async function loadExtension(s: PloopState, writer: boolean): Promise<void> {
  const extHost = s.header.extOff * SECTOR;
  const size = await s.host.size();
  if (extHost < s.layout.dataStart || extHost + s.layout.clusterSize > size) {
    throw new VdiskError(
      'ECORRUPT',
      `Cannot open '${s.filename}': format extension at ${hex(extHost)} is outside the data area (${hex(s.layout.dataStart)}..${hex(size)})`,
      { file: s.filename, offset: 56, field: 'ext_off' },
    );
  }
  if (!writer) {
    s.extHost = extHost;
    return;
  }
  const cluster = new Uint8Array(s.layout.clusterSize);
  await s.host.read(cluster, extHost);
  const plan = planForWriter(parseExtension(cluster));
  if (plan.action === 'refuse') {
    throw new VdiskError(
      'ENOTSUP',
      `Cannot open '${s.filename}' read/write: format extension ${hex(plan.magic)} is marked necessary and is not supported`,
      { file: s.filename, offset: extHost, field: 'ext_off' },
    );
  }
  if (plan.action === 'drop') {
    // The clusters it used become leaked space, which check reclaims at the file's end.
    setHeader(s, { ...s.header, extOff: 0 });
    return;
  }
  if (plan.changed) {
    const encoded = encodeExtension(plan.features, s.layout.clusterSize);
    if (encoded) {
      await s.host.write(encoded, extHost);
      await s.host.sync();
    }
  }
  s.extHost = extHost;
  s.dataEnd = Math.max(s.dataEnd, extHost + s.layout.clusterSize);
}

function problemWhy(p: BatProblem, layout: PloopLayout): string {
  switch (p.kind) {
    case 'outside':
      return `past end of file for a cluster of ${layout.clusterSize} bytes`;
    case 'header':
      return `inside the header/BAT area (data starts at ${hex(layout.dataStart)})`;
    case 'duplicate':
      return 'a cluster another BAT entry already uses';
  }
}
