/**
 * Growing a ploop image: a longer BAT, which may need the data clusters that lie
 * where the BAT grows to moved to the end of the file first. Runs under the
 * driver's exclusive gate, after a flush.
 *
 * Crash-safety order: moved clusters are copied and synced before the BAT entries
 * pointing at the copies are written; the new BAT area is zeroed and the other BAT
 * pages written and synced before page 0 (whose header makes the area part of the
 * BAT) is written last.
 */
import { VdiskError } from '../../errors.js';
import { SECTOR } from './header.js';
import { batEntryOffset, entryToHost, hostToEntry, MAX_BAT_ENTRIES } from './layout.js';
import { copyHost, setHeader, writeZerosAt, type PloopState } from './state.js';

/** Refuses what parallels cannot do: shrinking, preallocation, sizes not in whole sectors. */
export function validateResize(s: PloopState, newLength: number, preallocation: string | undefined): void {
  if (preallocation !== undefined && preallocation !== 'off') {
    throw new VdiskError('ENOTSUP', `'${s.filename}': preallocation=${preallocation} is not supported for parallels`, {
      file: s.filename,
      field: 'preallocation',
    });
  }
  if (!Number.isSafeInteger(newLength) || newLength % SECTOR !== 0 || newLength < 0) {
    throw new VdiskError('EINVAL', `'${s.filename}': new size ${newLength} is not a multiple of 512`, { file: s.filename, field: 'size' });
  }
  if (newLength < s.layout.length) {
    throw new VdiskError('ENOTSUP', `'${s.filename}': parallels images cannot be shrunk (${s.layout.length} -> ${newLength})`, {
      file: s.filename,
      field: 'size',
    });
  }
}

/** Grows the image to `newLength` bytes; the caller has flushed and holds the image alone. */
export async function growImage(s: PloopState, newLength: number): Promise<void> {
  const cs = s.layout.clusterSize;
  const entries = Math.max(s.layout.batEntries, Math.ceil(newLength / cs));
  if (entries > MAX_BAT_ENTRIES || (s.header.version === 1 && newLength / SECTOR > 0xffffffff)) {
    throw new VdiskError('EFBIG', `'${s.filename}': size ${newLength} is too large for this image`, { file: s.filename, field: 'size' });
  }
  const newBatEnd = batEntryOffset(entries);
  const newDataStart = Math.max(s.layout.dataStart, Math.ceil(newBatEnd / cs) * cs);
  if (newDataStart > s.layout.dataStart) await relocateBelow(s, newDataStart);
  // Build the larger table: the header, the old entries, zeros for the new ones.
  const bytes = new Uint8Array(newBatEnd);
  bytes.set(s.bat.bytes);
  s.bat.grow(bytes);
  setHeader(s, {
    ...s.header,
    batEntries: entries,
    sizeSectors: newLength / SECTOR,
    cylinders: Math.floor(newLength / SECTOR / 16 / 32) % 2 ** 32,
    dataOff: newDataStart / SECTOR,
  });
  // The new BAT area (possibly old data clusters, already copied away) becomes zeros
  // before the header that makes it part of the BAT is written last.
  await writeZerosAt(s, s.layout.batEnd, newDataStart - s.layout.batEnd);
  const pages = s.bat.snapshotDirty();
  await s.bat.writeSnapshot(
    s.host,
    pages.filter((p) => p.page !== 0),
  );
  await s.host.sync();
  await s.bat.writeSnapshot(
    s.host,
    pages.filter((p) => p.page === 0),
  );
  await s.host.sync();
  s.layout = { ...s.layout, batEntries: entries, batEnd: newBatEnd, dataStart: newDataStart, length: newLength };
}

/** Moves every cluster (and the extension cluster) lying below `limit` to the end of the file. */
async function relocateBelow(s: PloopState, limit: number): Promise<void> {
  const cs = s.layout.clusterSize;
  s.dataEnd = Math.max(s.dataEnd, limit);
  const copy = async (from: number): Promise<number> => {
    const to = s.dataEnd;
    s.dataEnd += cs;
    await copyHost(s, from, to, cs);
    return to;
  };
  const moved: Array<[number, number]> = [];
  for (let i = 0; i < s.layout.batEntries; i++) {
    const entry = s.bat.entry(i);
    if (entry !== 0 && entryToHost(s.layout, entry) < limit) {
      moved.push([i, hostToEntry(s.layout, await copy(entryToHost(s.layout, entry)), s.filename)]);
    }
  }
  let extMoved = false;
  if (s.extHost !== 0 && s.extHost < limit) {
    s.extHost = await copy(s.extHost);
    extMoved = true;
  }
  await s.host.sync();
  for (const [i, entry] of moved) s.bat.setEntry(i, entry);
  if (extMoved) setHeader(s, { ...s.header, extOff: s.extHost / SECTOR });
  await s.bat.writeSnapshot(s.host, s.bat.snapshotDirty());
  await s.host.sync();
}
