/**
 * Merging the allocation maps of a chain of layers into what `qemu-img map`
 * prints. QEMU's rule (qemu-img.c get_block_status and block/io.c):
 * - walking down from the top, the first layer that defines a range (allocated,
 *   i.e. data or zero) decides it; depth = that layer's index, present = true;
 * - a range no layer defines ends at a layer with no backing (the bottom), or at
 *   a layer whose backing is shorter than the range's offset: it reads as zeros,
 *   present = false, zero = true, and depth = the index of THAT layer (so the
 *   bottom layer's index, i.e. chain length - 1, not the chain length);
 * - when the walk stops at a `base` (the last layer considered still has a
 *   backing), an undefined range within the base's length is present = false,
 *   zero = false, data = false: its content comes from the base.
 *
 * Each layer is asked once for the whole remaining range; only the parts it
 * leaves undefined are passed down.
 */
import { VdiskError } from '../errors.js';
import type { LayerExtent } from '../formats/driver.js';
import type { ChainExtent } from './types.js';
import type { Mutable } from '../util/mutable.js';

/** One layer of the chain as the merge sees it. */
export interface StatusLayer {
  readonly filename: string;
  /** Length of the layer below, or null when there is none. */
  readonly backingLength: number | null;
  status(offset: number, length: number): Promise<LayerExtent[]>;
}

/**
 * Collects extents in order, merging each with the previous one when they are
 * equal and contiguous. A 1 TiB map makes tens of thousands: each is one object,
 * made here and grown in place.
 */
class ExtentList {
  readonly items: Mutable<ChainExtent>[] = [];

  /** A range no layer defines (see the module comment for `zero`). */
  pushUndefined(offset: number, length: number, depth: number, zero: boolean): void {
    if (length <= 0) return;
    const last = this.items[this.items.length - 1];
    // An undefined range is never data and has no host offset: what must match is the rest.
    if (last && !last.present && last.zero === zero && last.depth === depth) {
      last.length += length;
      return;
    }
    this.items.push({ offset, length, present: false, zero, data: false, depth });
  }

  /** A range layer `depth` defines as `e` says. */
  pushAllocated(offset: number, e: LayerExtent, depth: number, layer: StatusLayer): void {
    const length = e.length;
    if (length <= 0) return;
    const hostFile = e.hostOffset === undefined ? undefined : (e.hostFile ?? layer.filename);
    const compressed = e.compressed ?? false;
    const last = this.items[this.items.length - 1];
    if (
      last &&
      last.present &&
      last.zero === e.zero &&
      last.data === e.data &&
      last.depth === depth &&
      (last.compressed ?? false) === compressed &&
      last.hostFile === hostFile &&
      (last.hostOffset === undefined || e.hostOffset === undefined ? last.hostOffset === e.hostOffset : last.hostOffset + last.length === e.hostOffset)
    ) {
      last.length += length;
      return;
    }
    const item: Mutable<ChainExtent> = { offset, length, present: true, zero: e.zero, data: e.data, depth };
    if (e.hostOffset !== undefined && hostFile !== undefined) {
      item.hostOffset = e.hostOffset;
      item.hostFile = hostFile;
    }
    if (compressed) item.compressed = true;
    this.items.push(item);
  }
}

/** Merged block status of `layers` (top first) over [offset, offset+length). */
export async function mergeChainStatus(layers: readonly StatusLayer[], offset: number, length: number): Promise<ChainExtent[]> {
  const out = new ExtentList();
  await walk(layers, 0, offset, offset + length, out);
  return out.items;
}

async function walk(layers: readonly StatusLayer[], depth: number, start: number, end: number, out: ExtentList): Promise<void> {
  const layer = layers[depth];
  if (!layer) throw new VdiskError('EINVAL', 'Block status of an empty chain');
  let pos = start;
  while (pos < end) {
    const extents = await layer.status(pos, end - pos);
    if (extents.length === 0) {
      throw new VdiskError('EIO', `'${layer.filename}' reported no block status at offset ${pos}`, { file: layer.filename, offset: pos });
    }
    for (const e of extents) {
      if (!Number.isSafeInteger(e.length) || e.length <= 0 || pos + e.length > end) {
        throw new VdiskError('EIO', `'${layer.filename}' reported an invalid extent of length ${e.length} at offset ${pos}`, {
          file: layer.filename,
          offset: pos,
        });
      }
      if (e.allocated) out.pushAllocated(pos, e, depth, layer);
      else {
        // `await undefined` would still cost a turn: most holes need no layer below.
        const below = unallocated(layers, depth, pos, pos + e.length, out);
        if (below) await below;
      }
      pos += e.length;
    }
  }
}

/**
 * A range layer `depth` leaves undefined: from the layer below, or zeros.
 * Returns without a promise when nothing below needs asking (the bottom layer's holes).
 */
function unallocated(layers: readonly StatusLayer[], depth: number, start: number, end: number, out: ExtentList): Promise<void> | undefined {
  const backingLength = layers[depth]?.backingLength ?? null;
  if (backingLength === null) {
    out.pushUndefined(start, end - start, depth, true);
    return undefined;
  }
  const insideEnd = Math.max(start, Math.min(end, backingLength));
  if (insideEnd > start && depth + 1 < layers.length) {
    return walk(layers, depth + 1, start, insideEnd, out).then(() => out.pushUndefined(insideEnd, end - insideEnd, depth, true));
  }
  out.pushUndefined(start, insideEnd - start, depth, false);
  out.pushUndefined(insideEnd, end - insideEnd, depth, true);
  return undefined;
}
