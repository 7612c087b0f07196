import type { ImageNode } from '../../block/types.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { cHexAlt } from '../format/size-text.js';
import { getopt } from '../getopt.js';
import { openForReading, parseOutputFormat } from './info.js';
import { parseQemuSize } from '../create-options.js';

/** One line of `qemu-img map`: a run of the chain with the same status. */
export interface MapEntry {
  start: number;
  length: number;
  data: boolean;
  zero: boolean;
  present: boolean;
  depth: number;
  offset: number | undefined;
  filename: string | undefined;
}

/** qemu-img's entry_mergeable: same status, same file, and contiguous on the host when mapped. */
export function entryMergeable(curr: MapEntry, next: MapEntry): boolean {
  if (curr.length === 0) return false;
  if (curr.zero !== next.zero || curr.data !== next.data || curr.present !== next.present || curr.depth !== next.depth) return false;
  if ((curr.filename === undefined) !== (next.filename === undefined) || curr.filename !== next.filename) return false;
  if ((curr.offset === undefined) !== (next.offset === undefined)) return false;
  if (curr.offset !== undefined && curr.offset + curr.length !== next.offset) return false;
  return true;
}

function hexCol(n: number): string {
  return cHexAlt(n).padEnd(16);
}

/**
 * Prints one entry; returns false when the human form cannot show it. Like
 * qemu-img, the human form then treats the next entry's zero/unallocated
 * variants alike so they coalesce.
 */
export function dumpMapEntry(format: 'human' | 'json', e: MapEntry, next: MapEntry | undefined): { text: string; ok: boolean } {
  if (format === 'human') {
    if (e.data && e.offset === undefined) return { text: '', ok: false };
    let text = '';
    if (e.data && !e.zero) text = `${hexCol(e.start)}${hexCol(e.length)}${hexCol(e.offset ?? 0)}${e.filename ?? ''}\n`;
    if (next && (!next.data || next.zero)) {
      next.data = false;
      next.zero = true;
    }
    return { text, ok: true };
  }
  let text = `{ "start": ${e.start}, "length": ${e.length}, "depth": ${e.depth}, "present": ${e.present}, "zero": ${e.zero}, "data": ${e.data}`;
  if (e.offset !== undefined) text += `, "offset": ${e.offset}`;
  text += '}';
  if (next) text += ',\n';
  return { text, ok: true };
}

/**
 * Output is written once this much of it is pending: little enough that the
 * pending lines die young (at 64 KiB they outlived two scavenges and were
 * promoted, a map of 20,000 extents copying megabytes), enough that writes
 * stay few.
 */
const OUTPUT_FLUSH_CHARS = 16 * 1024;

/** Chain status in bounded windows, so a huge disk never yields one huge extent list. */
const WINDOW = 2 ** 32;

/** The entries of one window at a time: one await per window, not one per extent (a 1 TiB map has tens of thousands). */
async function* chainEntries(node: ImageNode, start: number, end: number): AsyncGenerator<MapEntry[]> {
  const layers = node.chain();
  for (let pos = start; pos < end; ) {
    const len = Math.min(WINDOW, end - pos);
    const extents = await node.blockStatus(pos, len);
    const entries: MapEntry[] = [];
    let advanced = 0;
    for (const x of extents) {
      if (x.length <= 0) continue;
      const hasOffset = x.hostOffset !== undefined && !x.compressed;
      entries.push({
        start: x.offset,
        length: x.length,
        data: x.data,
        zero: x.zero,
        present: x.present,
        // Unallocated everywhere: qemu-img reports the bottom layer's depth.
        depth: x.present ? x.depth : Math.min(x.depth, layers.length - 1),
        offset: hasOffset ? x.hostOffset : undefined,
        filename: hasOffset ? (x.hostFile ?? layers[x.depth]?.filename) : undefined,
      });
      advanced += x.length;
    }
    if (advanced === 0) throw new Error(`block status returned nothing at offset ${pos}`);
    yield entries;
    pos += advanced;
  }
}

/** `vdisk map [-f fmt] [--output=human|json] [--start-offset=N] [--max-length=N] [-U] filename` */
export async function mapCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'f:s:l:hU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'format', hasArg: true, key: 'f' },
      { name: 'output', hasArg: true, key: 'output' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
      { name: 'start-offset', hasArg: true, key: 's' },
      { name: 'max-length', hasArg: true, key: 'l' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  let format: string | undefined;
  let output: string | undefined;
  let forceShare = false;
  let imageOpts = false;
  let startOffset = 0;
  let maxLength: number | undefined;
  for (const { key, value = '' } of parsed.options) {
    if (key === 'f') format = value;
    else if (key === 'output') output = value;
    else if (key === 'U') forceShare = true;
    else if (key === 'image-opts') imageOpts = true;
    else if (key === 's' || key === 'l') {
      const n = parseQemuSize(value);
      if (n === undefined || n > Number.MAX_SAFE_INTEGER) {
        reportError(ctx, `Invalid ${key === 's' ? 'start offset' : 'max length'} specified. You may use k, M, G, T, P or E suffixes for \nvdisk: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.`);
        return 1;
      }
      if (key === 's') startOffset = n;
      else maxLength = n;
    }
  }
  if (parsed.operands.length !== 1) return reportUsage(ctx, 'Expecting one image file name');
  const filename = parsed.operands[0] ?? '';
  const outputFormat = parseOutputFormat(ctx, output);
  if (!outputFormat) return 1;
  const node = await openForReading(ctx, filename, { format, forceShare, imageOpts });
  if (!node) return 1;
  try {
    ctx.out.stdout(outputFormat === 'human' ? `${'Offset'.padEnd(16)}${'Length'.padEnd(16)}${'Mapped to'.padEnd(16)}File\n` : '[');
    let end = node.length;
    if (maxLength !== undefined) end = Math.min(startOffset + maxLength, end);
    let curr: MapEntry = { start: startOffset, length: 0, data: false, zero: false, present: false, depth: 0, offset: undefined, filename: undefined };
    let buffered = '';
    try {
      for await (const window of chainEntries(node, startOffset, end)) {
        for (const next of window) {
          if (entryMergeable(curr, next)) {
            curr.length += next.length;
            continue;
          }
          if (curr.length > 0) {
            const r = dumpMapEntry(outputFormat, curr, next);
            buffered += r.text;
            if (!r.ok) return failCompressed(ctx, buffered);
            if (buffered.length > OUTPUT_FLUSH_CHARS) {
              ctx.out.stdout(buffered);
              buffered = '';
            }
          }
          curr = next;
        }
      }
    } catch (e) {
      ctx.out.stdout(buffered);
      reportError(ctx, `Could not read file metadata: ${e instanceof Error ? e.message : String(e)}`);
      return 1;
    }
    const last = dumpMapEntry(outputFormat, curr, undefined);
    buffered += last.text;
    if (!last.ok) return failCompressed(ctx, buffered);
    if (outputFormat === 'json') buffered += ']\n';
    ctx.out.stdout(buffered);
    return 0;
  } finally {
    await node.close();
  }
}

function failCompressed(ctx: CliContext, buffered: string): number {
  ctx.out.stdout(buffered);
  reportError(ctx, 'File contains external, encrypted or compressed clusters.');
  return 1;
}
