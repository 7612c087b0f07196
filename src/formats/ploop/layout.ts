/**
 * Where things are in a ploop image, derived from its header and checked against
 * the file size: cluster size, BAT extent, data area, and BAT entry <-> host
 * offset conversion. Pure; refuses a header that cannot describe a usable image.
 */
import { VdiskError } from '../../errors.js';
import { hex } from '../../util/int64.js';
import { HEADER_SIZE, SECTOR, type PloopHeader } from './header.js';

/** BAT bytes are read, locked and written in pages of this size (page 0 starts with the header). */
export const BAT_PAGE_SIZE = 4096;
/** QEMU's limits: tracks <= INT32_MAX/513 sectors, bat_entries <= INT_MAX/4. */
export const MAX_CLUSTER_SECTORS = Math.floor(0x7fffffff / 513);
export const MAX_BAT_ENTRIES = Math.floor(0x7fffffff / 4);

export interface PloopLayout {
  readonly clusterSize: number;
  /** Bytes per BAT unit: a sector for v1 images, a cluster for v2. */
  readonly batUnit: number;
  readonly batEntries: number;
  /** End of the BAT in the file (header + entries), in bytes. */
  readonly batEnd: number;
  /** First byte of the data area. */
  readonly dataStart: number;
  /** Virtual size in bytes. */
  readonly length: number;
}

/** Byte offset of BAT entry `index` in the file. */
export function batEntryOffset(index: number): number {
  return HEADER_SIZE + 4 * index;
}

/** The BAT page holding entry `index`. */
export function batPageOf(index: number): number {
  return Math.floor(batEntryOffset(index) / BAT_PAGE_SIZE);
}

/** Number of BAT pages covering [0, batEnd). */
export function batPageCount(batEnd: number): number {
  return Math.ceil(batEnd / BAT_PAGE_SIZE);
}

/** Host byte offset of a non-zero BAT entry. */
export function entryToHost(layout: PloopLayout, entry: number): number {
  return entry * layout.batUnit;
}

/** BAT entry value for a host byte offset (which must be a whole number of units). */
export function hostToEntry(layout: PloopLayout, host: number, file: string): number {
  const entry = host / layout.batUnit;
  if (!Number.isInteger(entry) || entry > 0xffffffff) {
    throw new VdiskError('EFBIG', `Cannot allocate in '${file}': host offset ${hex(host)} cannot be stored in a BAT entry`, {
      file,
      offset: host,
      field: 'bat',
    });
  }
  return entry;
}

/** Derives the layout and refuses headers QEMU refuses or that lie about the file. */
export function layoutOf(h: PloopHeader, fileSize: number, file: string): PloopLayout {
  const ctx = (offset: number, field: string) => ({ file, offset, field });
  if (h.clusterSectors === 0) {
    throw new VdiskError('EINVAL', `Cannot open '${file}': invalid image: zero sectors per track (cluster size 0)`, ctx(28, 'tracks'));
  }
  if (h.clusterSectors > MAX_CLUSTER_SECTORS) {
    throw new VdiskError(
      'EFBIG',
      `Cannot open '${file}': invalid image: cluster of ${h.clusterSectors} sectors is too big (max ${MAX_CLUSTER_SECTORS})`,
      ctx(28, 'tracks'),
    );
  }
  if (h.batEntries > MAX_BAT_ENTRIES) {
    throw new VdiskError('EFBIG', `Cannot open '${file}': catalog too large (${h.batEntries} BAT entries)`, ctx(32, 'bat_entries'));
  }
  const clusterSize = h.clusterSectors * SECTOR;
  const length = h.sizeSectors * SECTOR;
  const batEnd = batEntryOffset(h.batEntries);
  if (h.batEntries * clusterSize < length) {
    throw new VdiskError(
      'ECORRUPT',
      `Cannot open '${file}': ${h.batEntries} BAT entries of ${clusterSize} bytes do not cover the virtual size ${length}`,
      ctx(32, 'bat_entries'),
    );
  }
  if (batEnd > fileSize) {
    throw new VdiskError(
      'ECORRUPT',
      `Cannot open '${file}': BAT of ${h.batEntries} entries ends at ${hex(batEnd)}, past end of file (size ${hex(fileSize)})`,
      ctx(32, 'bat_entries'),
    );
  }
  const dataStart = h.dataOff !== 0 ? h.dataOff * SECTOR : Math.ceil(batEnd / SECTOR) * SECTOR;
  if (dataStart < batEnd) {
    throw new VdiskError(
      'ECORRUPT',
      `Cannot open '${file}': data_off ${hex(dataStart)} lies inside the BAT (which ends at ${hex(batEnd)})`,
      ctx(48, 'data_off'),
    );
  }
  if (dataStart > fileSize) {
    throw new VdiskError(
      'ECORRUPT',
      `Cannot open '${file}': data_off ${hex(dataStart)} is past end of file (size ${hex(fileSize)})`,
      ctx(48, 'data_off'),
    );
  }
  return { clusterSize, batUnit: h.version === 1 ? SECTOR : clusterSize, batEntries: h.batEntries, batEnd, dataStart, length };
}
