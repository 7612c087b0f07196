/**
 * Walks zstd frames (RFC 8878 section 3.1) to find where they end. A qcow2
 * compressed slot is only known to sector precision, so it holds bytes after the
 * frame; every zstd decoder refuses trailing garbage, hence the walk.
 */
import { VdiskError } from '../../errors.js';

const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;

export interface ZstdFrame {
  /** Bytes from the start of the buffer to the end of the frame. */
  readonly length: number;
  /** Decompressed size when the frame header states it. */
  readonly contentSize: number | null;
  readonly skippable: boolean;
}

function truncated(what: string): VdiskError {
  return new VdiskError('ECORRUPT', `zstd frame is truncated (${what})`, { field: 'compressed cluster' });
}

/** Measures the frame starting at `pos` of `buf`. */
export function measureZstdFrame(buf: Uint8Array, pos = 0): ZstdFrame {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (pos + 4 > buf.length) throw truncated('magic');
  const magic = view.getUint32(pos, true);
  if ((magic & SKIPPABLE_MASK) >>> 0 === SKIPPABLE_MAGIC) {
    if (pos + 8 > buf.length) throw truncated('skippable header');
    const size = view.getUint32(pos + 4, true);
    if (pos + 8 + size > buf.length) throw truncated('skippable frame');
    return { length: 8 + size, contentSize: 0, skippable: true };
  }
  if (magic !== ZSTD_MAGIC) {
    throw new VdiskError('ECORRUPT', `no zstd frame: magic 0x${magic.toString(16)}`, { field: 'compressed cluster' });
  }
  let p = pos + 4;
  if (p >= buf.length) throw truncated('frame header');
  const fhd = buf[p++] ?? 0;
  const fcsFlag = fhd >>> 6;
  const singleSegment = (fhd & 0x20) !== 0;
  const checksum = (fhd & 0x04) !== 0;
  if ((fhd & 0x08) !== 0) throw new VdiskError('ECORRUPT', 'zstd frame header has the reserved bit set', { field: 'compressed cluster' });
  const dictBytes = [0, 1, 2, 4][fhd & 3] ?? 0;
  const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : [0, 2, 4, 8][fcsFlag] ?? 0;
  if (!singleSegment) p += 1;
  p += dictBytes;
  if (p + fcsBytes > buf.length) throw truncated('frame header');
  let contentSize: number | null = null;
  if (fcsBytes === 1) contentSize = buf[p] ?? 0;
  else if (fcsBytes === 2) contentSize = view.getUint16(p, true) + 256;
  else if (fcsBytes === 4) contentSize = view.getUint32(p, true);
  else if (fcsBytes === 8) contentSize = Number(view.getBigUint64(p, true));
  p += fcsBytes;
  for (;;) {
    if (p + 3 > buf.length) throw truncated('block header');
    const bh = (buf[p] ?? 0) | ((buf[p + 1] ?? 0) << 8) | ((buf[p + 2] ?? 0) << 16);
    p += 3;
    const last = (bh & 1) !== 0;
    const type = (bh >>> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) throw new VdiskError('ECORRUPT', 'zstd block has the reserved type', { field: 'compressed cluster' });
    p += type === 1 ? 1 : size;
    if (p > buf.length) throw truncated('block');
    if (last) break;
  }
  if (checksum) p += 4;
  if (p > buf.length) throw truncated('checksum');
  return { length: p - pos, contentSize, skippable: false };
}
