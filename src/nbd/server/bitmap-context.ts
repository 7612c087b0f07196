/**
 * `qemu:dirty-bitmap:NAME` contexts: a dirty bitmap described as NBD block
 * status extents (bit 0 = dirty), and persistent qcow2 bitmaps loaded into an
 * in-memory DirtyBitmap so that an export can serve (and keep tracking) them.
 */
import { DirtyBitmap } from '../../block/dirty-bitmap.js';
import type { ImageNode } from '../../block/types.js';
import { VdiskError } from '../../errors.js';
import { DIRTY_STATE } from '../protocol/constants.js';
import type { StatusDescriptor } from '../protocol/replies.js';

/** A bitmap offered by an export under `qemu:dirty-bitmap:${name}`. */
export interface ExportBitmap {
  readonly name: string;
  readonly bitmap: DirtyBitmap;
}

/**
 * Dirty/clean runs of `bitmap` over [offset, offset+length), clipped to the
 * range, adjacent equal runs merged, at most `maxExtents` descriptors (the
 * client asks again for the rest). Never empty for a non-empty range.
 */
export function bitmapExtents(bitmap: DirtyBitmap, range: { offset: number; length: number }, maxExtents: number): StatusDescriptor[] {
  const out: Array<{ length: number; flags: number }> = [];
  const end = Math.min(range.offset + range.length, bitmap.length);
  const push = (length: number, flags: number): boolean => {
    if (length <= 0) return true;
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += length;
    else {
      if (out.length >= maxExtents) return false;
      out.push({ length, flags });
    }
    return true;
  };
  let pos = range.offset;
  while (pos < end) {
    const next = bitmap.nextDirty(pos, end - pos);
    if (next === null || next.offset >= end) {
      push(end - pos, 0);
      break;
    }
    const dirtyFrom = Math.max(next.offset, pos);
    if (!push(dirtyFrom - pos, 0)) break;
    const dirtyTo = Math.min(next.offset + next.length, end);
    if (!push(dirtyTo - dirtyFrom, DIRTY_STATE)) break;
    pos = dirtyTo;
  }
  // A range past the bitmap's end (a grown disk) is reported clean.
  if (out.length === 0) out.push({ length: range.length, flags: 0 });
  return out;
}

/**
 * Loads the persistent bitmap `name` of `node` (qcow2) into memory, as
 * qemu-nbd -B and block-export-add `bitmaps` do. ENOENT when the node has no
 * such bitmap, ENOTSUP when its format has no persistent bitmaps.
 */
export async function loadPersistentBitmap(node: ImageNode, name: string): Promise<{ readonly bitmap: DirtyBitmap; readonly enabled: boolean }> {
  const ops = node.bitmaps;
  if (!ops) throw new VdiskError('ENOTSUP', `Bitmap '${name}' is not found: '${node.filename}' (${node.format}) has no persistent bitmaps`, { file: node.filename, field: 'bitmap' });
  const info = (await ops.list()).find((b) => b.name === name);
  if (!info) throw new VdiskError('ENOENT', `Bitmap '${name}' is not found`, { file: node.filename, field: 'bitmap' });
  // An in-use bitmap was not saved consistently: qemu refuses to export it too.
  if (info.flags.includes('in-use')) throw new VdiskError('EINVAL', `Bitmap '${name}' is inconsistent and cannot be used`, { file: node.filename, field: 'bitmap' });
  const { granularity, bits } = await ops.readBits(name);
  const bitmap = new DirtyBitmap(node.length, Math.max(granularity, 512));
  const granules = Math.ceil(node.length / granularity);
  for (let byte = 0; byte < bits.byteLength; byte++) {
    const b = bits[byte] ?? 0;
    if (b === 0) continue;
    for (let bit = 0; bit < 8; bit++) {
      const g = byte * 8 + bit;
      if (g < granules && b & (1 << bit)) bitmap.set(g * granularity, granularity);
    }
  }
  return { bitmap, enabled: info.flags.includes('auto') };
}

/** A node that reports its writes (BlockNode); ImageNode itself does not promise it. */
interface WriteObservable {
  addWriteObserver(o: { before(e: { offset: number; length: number }): void; after(e: { offset: number; length: number }): void }): () => void;
}

function isWriteObservable(node: object): node is WriteObservable {
  return typeof (node as Partial<WriteObservable>).addWriteObserver === 'function';
}

/**
 * Makes `bitmap` record every write, zero and discard on `node` (marked before
 * and after the request, as mirror does, so a reader never misses one).
 * Returns the detach function; ENOTSUP for a node that cannot report writes.
 */
export function followWrites(node: ImageNode, bitmap: DirtyBitmap): () => void {
  if (!isWriteObservable(node)) throw new VdiskError('ENOTSUP', `Node '${node.filename}' cannot track writes in a dirty bitmap`, { file: node.filename });
  const mark = (e: { offset: number; length: number }): void => bitmap.set(e.offset, e.length);
  return node.addWriteObserver({ before: mark, after: mark });
}
