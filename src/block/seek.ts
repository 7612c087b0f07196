/**
 * lseek(SEEK_DATA / SEEK_HOLE) over a whole chain. As in QEMU's file driver and
 * NBD's base:allocation, a "hole" is a range that reads as zeros (zero = true):
 * a host hole, a zero cluster, or a range no layer defines. Everything else is
 * data. The end of the disk counts as a hole; offsets at or past it are ENXIO.
 */
import { VdiskError } from '../errors.js';
import type { ChainExtent } from './types.js';

/** Block status is asked for in windows of this size, so a huge disk never yields one huge array. */
const SEEK_WINDOW = 1024 ** 3;

export interface Seekable {
  readonly filename: string;
  readonly length: number;
  blockStatus(offset: number, length: number): Promise<ChainExtent[]>;
}

/** First offset >= `offset` where the chain holds data (want 'data') or a hole (want 'hole'). */
export async function seekChain(node: Seekable, offset: number, want: 'data' | 'hole'): Promise<number> {
  const size = node.length;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset >= size) {
    throw new VdiskError('ENXIO', `Cannot seek to ${want} at offset ${offset} of '${node.filename}' (size ${size})`, {
      file: node.filename,
      offset,
    });
  }
  for (let pos = offset; pos < size; ) {
    const window = Math.min(SEEK_WINDOW, size - pos);
    for (const e of await node.blockStatus(pos, window)) {
      if (e.zero === (want === 'hole')) return Math.max(e.offset, offset);
    }
    pos += window;
  }
  if (want === 'hole') return size;
  throw new VdiskError('ENXIO', `No data at or after offset ${offset} of '${node.filename}'`, { file: node.filename, offset });
}
