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

/** One layer of the chain as the merge sees it. */
export interface StatusLayer {
  readonly filename: string;
  /** Length of the layer below, or null when there is none. */
  readonly backingLength: number | null;
  status(offset: number, length: number): Promise<LayerExtent[]>;
}

type ExtentFields = Omit<ChainExtent, 'offset' | 'length'>;

/** Collects extents in order, merging each with the previous one when they are equal and contiguous. */
class ExtentList {
  readonly items: ChainExtent[] = [];

  push(offset: number, length: number, fields: ExtentFields): void {
    if (length <= 0) return;
    const last = this.items[this.items.length - 1];
    if (last && canMerge(last, fields)) {
      this.items[this.items.length - 1] = { ...last, length: last.length + length };
      return;
    }
    this.items.push({ offset, length, ...fields });
  }
}

function canMerge(a: ChainExtent, b: ExtentFields): boolean {
  if (a.present !== b.present || a.zero !== b.zero || a.data !== b.data || a.depth !== b.depth) return false;
  if ((a.compressed ?? false) !== (b.compressed ?? false) || a.hostFile !== b.hostFile) return false;
  if (a.hostOffset === undefined || b.hostOffset === undefined) return a.hostOffset === b.hostOffset;
  return a.hostOffset + a.length === b.hostOffset;
}

function allocatedFields(e: LayerExtent, depth: number, layer: StatusLayer): ExtentFields {
  const fields: { -readonly [K in keyof ExtentFields]: ExtentFields[K] } = {
    present: true,
    zero: e.zero,
    data: e.data,
    depth,
  };
  if (e.hostOffset !== undefined) {
    fields.hostOffset = e.hostOffset;
    fields.hostFile = e.hostFile ?? layer.filename;
  }
  if (e.compressed) fields.compressed = true;
  return fields;
}

/** Merged block status of `layers` (top first) over [offset, offset+length). */
export async function mergeChainStatus(layers: readonly StatusLayer[], offset: number, length: number): Promise<ChainExtent[]> {
  const out = new ExtentList();
  await walk(layers, 0, { offset, length }, out);
  return out.items;
}

async function walk(
  layers: readonly StatusLayer[],
  depth: number,
  range: { readonly offset: number; readonly length: number },
  out: ExtentList,
): Promise<void> {
  const layer = layers[depth];
  if (!layer) throw new VdiskError('EINVAL', 'Block status of an empty chain');
  const end = range.offset + range.length;
  let pos = range.offset;
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
      if (e.allocated) out.push(pos, e.length, allocatedFields(e, depth, layer));
      else await unallocated(layers, depth, { offset: pos, length: e.length }, out);
      pos += e.length;
    }
  }
}

/** A range layer `depth` leaves undefined: from the layer below, or zeros. */
async function unallocated(
  layers: readonly StatusLayer[],
  depth: number,
  range: { readonly offset: number; readonly length: number },
  out: ExtentList,
): Promise<void> {
  const layer = layers[depth];
  const backingLength = layer?.backingLength ?? null;
  const zero: ExtentFields = { present: false, zero: true, data: false, depth };
  if (backingLength === null) {
    out.push(range.offset, range.length, zero);
    return;
  }
  const inside = Math.max(0, Math.min(range.length, backingLength - range.offset));
  if (inside > 0) {
    if (depth + 1 < layers.length) await walk(layers, depth + 1, { offset: range.offset, length: inside }, out);
    else out.push(range.offset, inside, { present: false, zero: false, data: false, depth });
  }
  out.push(range.offset + inside, range.length - inside, zero);
}
