import type { ChainExtent, ImageNode } from '../../block/types.js';
import { CmdFlag, META_ALLOCATION_DEPTH, META_BASE_ALLOCATION, StateFlag } from '../protocol/constants.js';
import type { StatusDescriptor } from '../protocol/replies.js';
import { bitmapExtents } from './bitmap-context.js';
import type { KnownData } from './known-data.js';
import type { MetaContext } from './meta-context.js';

/** A piece of a READ answer: bytes to send, or a run of zeros the client can skip. */
export type ReadPiece =
  | { readonly kind: 'data'; readonly offset: number; readonly data: Uint8Array }
  | { readonly kind: 'hole'; readonly offset: number; readonly length: number };

/** Holes shorter than this are sent as data: a chunk header costs more than a few zeros. */
const MIN_HOLE = 4096;

/**
 * Block status for a READ looks this far ahead, so the READs that follow
 * (nbdcopy's are 256 KiB, in order) find their range known as data and skip
 * the map: one map of 8 MiB costs about what one of 256 KiB does.
 */
const STATUS_AHEAD = 8 * 1024 * 1024;

export interface ReadPiecesOptions {
  /** DF: the answer must be a single piece. */
  readonly oneChunk: boolean;
  /** Gives the buffer the data pieces are views of (possibly reused: every byte sent is read first). */
  readonly alloc: (length: number) => Uint8Array;
  /** Where block status lately found data; read, and updated by this call. */
  readonly known?: KnownData;
}

/**
 * Whether a READ is answered as one piece of data without asking the map: a
 * read no longer than the smallest hole we would send cannot gain from it (the
 * 4 KiB random-read hot path), DF forbids splitting, or the range is known data.
 */
export function readsAsOnePiece(range: { readonly offset: number; readonly length: number }, oneChunk: boolean, known?: KnownData, epoch?: number): boolean {
  return range.length <= MIN_HOLE || oneChunk || (known?.covers(range.offset, range.length, epoch) ?? false);
}

/**
 * Reads [offset, offset+length) for a structured reply: ranges the chain says
 * read as zeros become holes, the rest is read in one buffer.
 */
export async function readPieces(node: ImageNode, range: { offset: number; length: number }, options: ReadPiecesOptions): Promise<ReadPiece[]> {
  const { offset, length } = range;
  const { known, alloc } = options;
  const epoch = node.zeroingEpoch;
  if (readsAsOnePiece(range, options.oneChunk, known, epoch)) return [await readData(node, offset, alloc(length))];
  const span = known ? Math.max(length, Math.min(STATUS_AHEAD, node.length - offset)) : length;
  // Holes are an optimisation: if the map cannot be had, the read still succeeds as plain data.
  const extents = await node.blockStatus(offset, span).catch((): ChainExtent[] => []);
  if (known && span > length) {
    const lead = zeroRuns(extents, offset, span)[0];
    if (lead && !lead.zero) known.remember(lead.offset, lead.length, epoch);
  }
  const runs = zeroRuns(extents, offset, length);
  if (runs.length === 1 && runs[0]?.zero) return [{ kind: 'hole', offset, length }];
  if (runs.every((r) => !r.zero)) return [await readData(node, offset, alloc(length))];
  // Only the views of data runs are read and sent; the rest of a reused buffer is never sent.
  const data = alloc(length);
  const pieces: ReadPiece[] = [];
  const reads: Promise<void>[] = [];
  for (const r of runs) {
    if (r.zero) {
      pieces.push({ kind: 'hole', offset: r.offset, length: r.length });
    } else {
      const view = data.subarray(r.offset - offset, r.offset - offset + r.length);
      reads.push(node.read(r.offset, view));
      pieces.push({ kind: 'data', offset: r.offset, data: view });
    }
  }
  await Promise.all(reads);
  return pieces;
}

async function readData(node: ImageNode, offset: number, data: Uint8Array): Promise<ReadPiece> {
  await node.read(offset, data);
  return { kind: 'data', offset, data };
}

interface Run {
  offset: number;
  length: number;
  zero: boolean;
}

/** Merges extents into alternating data / zero runs clipped to the range; short zero runs count as data. */
function zeroRuns(extents: readonly ChainExtent[], offset: number, length: number): Run[] {
  const runs: Run[] = [];
  let pos = offset;
  const end = offset + length;
  for (const e of extents) {
    if (pos >= end) break;
    const len = Math.min(e.length, end - pos);
    if (len <= 0) continue;
    const zero = e.zero && len >= MIN_HOLE;
    const last = runs[runs.length - 1];
    if (last && last.zero === zero) last.length += len;
    else runs.push({ offset: pos, length: len, zero });
    pos += len;
  }
  // Whatever the extents did not cover is read as data (never assume zeros).
  if (pos < end) {
    const last = runs[runs.length - 1];
    if (last && !last.zero) last.length += end - pos;
    else runs.push({ offset: pos, length: end - pos, zero: false });
  }
  // Re-merging after demoting short holes.
  const merged: Run[] = [];
  for (const r of runs) {
    const last = merged[merged.length - 1];
    if (last && last.zero === r.zero) last.length += r.length;
    else merged.push({ ...r });
  }
  return merged;
}

/** At most this much of the disk is examined per BLOCK_STATUS request; the client asks again for the rest. */
const MAX_STATUS_SPAN = 1024 * 1024 * 1024;
/** At most this many descriptors per context in one reply. */
const MAX_STATUS_EXTENTS = 65536;

/**
 * BLOCK_STATUS: one descriptor list per selected context. The chain is walked
 * once for all allocation contexts (and not at all when only bitmaps are
 * selected); bitmap contexts read their bitmap.
 */
export async function blockStatusReplies(
  node: ImageNode,
  request: { offset: number; length: number; flags: number },
  contexts: readonly MetaContext[],
): Promise<Array<{ context: MetaContext; extents: StatusDescriptor[] }>> {
  const span = Math.min(request.length, MAX_STATUS_SPAN, node.length - request.offset);
  const needsChain = contexts.some((c) => !c.bitmap);
  const extents = needsChain ? await node.blockStatus(request.offset, span) : [];
  const reqOne = (request.flags & CmdFlag.REQ_ONE) !== 0;
  return contexts.map((context) => {
    if (context.bitmap) return { context, extents: bitmapExtents(context.bitmap, { offset: request.offset, length: span }, reqOne ? 1 : MAX_STATUS_EXTENTS) };
    return { context, extents: describe(extents, context.name, reqOne, span) };
  });
}

function flagsFor(e: ChainExtent, contextName: string): number {
  if (contextName === META_BASE_ALLOCATION) return (e.data ? 0 : StateFlag.HOLE) | (e.zero ? StateFlag.ZERO : 0);
  if (contextName === META_ALLOCATION_DEPTH) return e.present ? e.depth + 1 : 0;
  return 0;
}

function describe(extents: readonly ChainExtent[], contextName: string, reqOne: boolean, span: number): StatusDescriptor[] {
  const out: Array<{ length: number; flags: number }> = [];
  let covered = 0;
  for (const e of extents) {
    if (covered >= span) break;
    const length = Math.min(e.length, span - covered);
    if (length <= 0) continue;
    const flags = flagsFor(e, contextName);
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.length += length;
    else {
      if (out.length >= MAX_STATUS_EXTENTS) break;
      out.push({ length, flags });
    }
    covered += length;
    if (reqOne) break;
  }
  if (out.length === 0) out.push({ length: span, flags: 0 });
  return out;
}
