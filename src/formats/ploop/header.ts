/**
 * The 64-byte ploop / Parallels header (`struct ploop_pvd_header`), little-endian.
 * Pure codec: bytes in, a typed header out, and back. Field-level validation
 * that needs the file size lives in layout.ts.
 *
 *   0 magic[16]   "WithoutFreeSpace" (v1: BAT in sectors) | "WithouFreSpacExt" (v2: BAT in clusters)
 *  16 version     must be 2
 *  20 heads, 24 cylinders   cosmetic CHS geometry
 *  28 tracks      cluster size in 512-byte sectors
 *  32 bat_entries number of BAT entries
 *  36 nb_sectors  virtual size in sectors (v1: low 32 bits only)
 *  44 inuse       0x746F6E59 while open for writing; 0 or 0x312e3276 when closed
 *  48 data_off    first data sector (0 in old v1 images: right after the BAT)
 *  52 flags       bit 0: empty image
 *  56 ext_off     format-extension cluster, in sectors (0 = none)
 */
import { VdiskError } from '../../errors.js';
import { hex, toSafeNumber } from '../../util/int64.js';

export const HEADER_SIZE = 64;
export const SECTOR = 512;
export const MAGIC_V1 = 'WithoutFreeSpace';
export const MAGIC_V2 = 'WithouFreSpacExt';
export const HEADER_VERSION = 2;
/** "Ynot": the image is open for writing, or was not closed cleanly. */
export const INUSE_MAGIC = 0x746f6e59;
/** "v2.1": closed by software that wrote a format-extension block. */
export const CLOSED_WITH_EXT_MAGIC = 0x312e3276;

/** v1 images address data in sectors, v2 images in clusters. */
export type PloopVersion = 1 | 2;

export interface PloopHeader {
  readonly version: PloopVersion;
  readonly heads: number;
  readonly cylinders: number;
  /** Cluster size in sectors (`tracks`). */
  readonly clusterSectors: number;
  readonly batEntries: number;
  /** Virtual size in sectors (for v1, only the low 32 bits of the field). */
  readonly sizeSectors: number;
  readonly inUse: number;
  /** First data sector as stored (0 = compute from the BAT end). */
  readonly dataOff: number;
  readonly flags: number;
  /** Format-extension cluster in sectors, 0 for none. */
  readonly extOff: number;
}

function magicOf(head: Uint8Array): string {
  return String.fromCharCode(...head.subarray(0, 16));
}

/** True when `head` starts with a ploop header QEMU would recognise. */
export function isPloopHeader(head: Uint8Array): boolean {
  if (head.length < HEADER_SIZE) return false;
  const magic = magicOf(head);
  if (magic !== MAGIC_V1 && magic !== MAGIC_V2) return false;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return view.getUint32(16, true) === HEADER_VERSION;
}

/** Decodes the header; refuses a wrong signature or version with the value found. */
export function decodeHeader(head: Uint8Array, file: string): PloopHeader {
  if (head.length < HEADER_SIZE) {
    throw new VdiskError('EINVAL', `Image '${file}' is not in Parallels format: file is only ${head.length} bytes`, {
      file,
      field: 'magic',
    });
  }
  const magic = magicOf(head);
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  let version: PloopVersion;
  if (magic === MAGIC_V1) version = 1;
  else if (magic === MAGIC_V2) version = 2;
  else {
    throw new VdiskError('EINVAL', `Image '${file}' is not in Parallels format: bad signature ${JSON.stringify(magic)}`, {
      file,
      offset: 0,
      field: 'magic',
    });
  }
  const formatVersion = view.getUint32(16, true);
  if (formatVersion !== HEADER_VERSION) {
    throw new VdiskError('EINVAL', `Image '${file}' is not in Parallels format: version ${formatVersion} (expected 2)`, {
      file,
      offset: 16,
      field: 'version',
    });
  }
  const sizeField = view.getBigUint64(36, true);
  const sizeSectors =
    version === 1 ? Number(sizeField & 0xffffffffn) : toSafeNumber(sizeField, 'nb_sectors', { file, offset: 36, field: 'nb_sectors' });
  return {
    version,
    heads: view.getUint32(20, true),
    cylinders: view.getUint32(24, true),
    clusterSectors: view.getUint32(28, true),
    batEntries: view.getUint32(32, true),
    sizeSectors,
    inUse: view.getUint32(44, true),
    dataOff: view.getUint32(48, true),
    flags: view.getUint32(52, true),
    extOff: toSafeNumber(view.getBigUint64(56, true), 'ext_off', { file, offset: 56, field: 'ext_off' }),
  };
}

/** Encodes `h` into the first 64 bytes of `out`. */
export function encodeHeader(h: PloopHeader, out: Uint8Array): void {
  const magic = h.version === 1 ? MAGIC_V1 : MAGIC_V2;
  for (let i = 0; i < 16; i++) out[i] = magic.charCodeAt(i);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint32(16, HEADER_VERSION, true);
  view.setUint32(20, h.heads, true);
  view.setUint32(24, h.cylinders, true);
  view.setUint32(28, h.clusterSectors, true);
  view.setUint32(32, h.batEntries, true);
  if (h.version === 1) {
    if (h.sizeSectors > 0xffffffff) {
      throw new VdiskError('EFBIG', `nb_sectors ${hex(h.sizeSectors)} does not fit a v1 Parallels header`, { field: 'nb_sectors' });
    }
    view.setUint32(36, h.sizeSectors, true);
    view.setUint32(40, 0, true);
  } else {
    view.setBigUint64(36, BigInt(h.sizeSectors), true);
  }
  view.setUint32(44, h.inUse, true);
  view.setUint32(48, h.dataOff, true);
  view.setUint32(52, h.flags, true);
  view.setBigUint64(56, BigInt(h.extOff), true);
}
