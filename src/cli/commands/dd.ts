/**
 * `vdisk dd`: qemu-img dd. Copies `count` blocks of `bs` bytes (counted from the
 * start of the input, as qemu-img 7.2 does, so `skip` shortens the copy) from
 * `if` at block `skip` into a new image `of`. Every block is written, zeros too.
 */
import type { ImageNode } from '../../block/types.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { formatOptions, parseQemuSize } from '../create-options.js';
import { createFailureText, ioFailureText } from '../errors-text.js';
import { getopt } from '../getopt.js';
import { openErrorText } from '../open-error.js';
import { toFormatName } from './create.js';
import { openForReading } from './info.js';

const INT_MAX = 2147483647;
const INT64_MAX = 2n ** 63n - 1n;

interface DdOperands {
  bs: number;
  count: number | undefined;
  skip: number | undefined;
  input: string | undefined;
  output: string | undefined;
}

/** cvtnum_full(name, text, min, max): qemu-img's two error texts; undefined after reporting. */
function blockNumber(ctx: CliContext, name: string, text: string, max: bigint): number | undefined {
  const n = parseQemuSize(text);
  if (n === undefined) {
    reportError(ctx, `Invalid ${name} specified. You may use k, M, G, T, P or E suffixes for`);
    reportError(ctx, 'kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.');
    return undefined;
  }
  const min = name === 'bs' ? 1 : 0;
  if (n < min || BigInt(Math.floor(n)) > max || n > Number.MAX_SAFE_INTEGER) {
    reportError(ctx, `Invalid ${name} specified. Must be between ${min} and ${max}.`);
    return undefined;
  }
  return n;
}

/** Parses the key=value operands; reports and returns undefined on the first bad one. */
function parseOperands(ctx: CliContext, operands: readonly string[]): DdOperands | undefined {
  const dd: DdOperands = { bs: 512, count: undefined, skip: undefined, input: undefined, output: undefined };
  for (const arg of operands) {
    const eq = arg.indexOf('=');
    const key = eq < 0 ? arg : arg.slice(0, eq);
    const value = eq < 0 ? '' : arg.slice(eq + 1);
    if (eq < 0 || !['bs', 'count', 'skip', 'if', 'of'].includes(key)) {
      reportError(ctx, `unrecognized operand ${key}`);
      return undefined;
    }
    if (key === 'if') dd.input = value;
    else if (key === 'of') dd.output = value;
    else {
      const n = blockNumber(ctx, key, value, key === 'bs' ? BigInt(INT_MAX) : INT64_MAX);
      if (n === undefined) return undefined;
      if (key === 'bs') dd.bs = n;
      else if (key === 'count') dd.count = n;
      else dd.skip = n;
    }
  }
  return dd;
}

/** `vdisk dd [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output` */
export async function ddCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hf:O:U',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  let sourceFormat: string | undefined;
  let targetFormat = 'raw';
  let forceShare = false;
  // --image-opts names the input only: qemu-img dd creates and opens of= as a plain file name.
  let imageOpts = false;
  for (const { key, value = '' } of parsed.options) {
    if (key === 'h') return reportUsage(ctx, 'see qemu-img(1) for the dd options');
    if (key === 'f') sourceFormat = value;
    else if (key === 'O') targetFormat = value;
    else if (key === 'U') forceShare = true;
    else if (key === 'image-opts') imageOpts = true;
  }
  const dd = parseOperands(ctx, parsed.operands);
  if (!dd) return 1;
  if (dd.input === undefined || dd.output === undefined) {
    reportError(ctx, 'Must specify both input and output files');
    return 1;
  }
  const source = await openForReading(ctx, dd.input, { format: sourceFormat, forceShare, imageOpts });
  if (!source) return 1;
  let target: ImageNode | undefined;
  try {
    const format = toFormatName(targetFormat);
    if (format === undefined || !formatOptions(targetFormat)) {
      reportError(ctx, 'Unknown file format');
      return 1;
    }
    let size = source.length;
    if (dd.count !== undefined && dd.count * dd.bs < size) size = dd.count * dd.bs;
    const skipBytes = (dd.skip ?? 0) * dd.bs;
    const skipsPastEnd = dd.skip !== undefined && (skipBytes > Number.MAX_SAFE_INTEGER || size < skipBytes);
    try {
      await ctx.engine.createImage(dd.output, format, { size: skipsPastEnd ? 0 : size - skipBytes, options: {} });
    } catch (e) {
      reportError(ctx, `${dd.output}: error while creating output image: ${createFailureText(dd.output, e)}`);
      return 1;
    }
    try {
      target = await ctx.engine.openImage(dd.output, { format, readOnly: false });
    } catch (e) {
      reportError(ctx, `Could not open '${dd.output}': ${openErrorText(dd.output, e)}`);
      return 1;
    }
    let offset = skipBytes;
    if (skipsPastEnd) {
      // Like dd(1): an empty output and a warning, not a failure; nothing is copied.
      reportError(ctx, `${dd.input}: cannot skip to specified offset`);
      offset = size;
    }
    return await copyBlocks(ctx, { source, target, offset, size, blockSize: dd.bs });
  } finally {
    await target?.close().catch(() => undefined);
    await source.close().catch(() => undefined);
  }
}

/** The copy loop: one block at a time, the last one short. */
async function copyBlocks(
  ctx: CliContext,
  job: { readonly source: ImageNode; readonly target: ImageNode; readonly offset: number; readonly size: number; readonly blockSize: number },
): Promise<number> {
  // One buffer of at most a block; a huge bs on a small image needs no more than the image.
  const buffer = new Uint8Array(Math.min(job.blockSize, Math.max(0, job.size - job.offset)));
  let outPos = 0;
  for (let inPos = job.offset; inPos < job.size; ) {
    const data = buffer.subarray(0, Math.min(job.blockSize, job.size - inPos));
    try {
      await job.source.read(inPos, data);
    } catch (e) {
      reportError(ctx, `error while reading from input image file: ${ioFailureText(e)}`);
      return 1;
    }
    inPos += data.length;
    try {
      await job.target.write(outPos, data);
    } catch (e) {
      reportError(ctx, `error while writing to output image file: ${ioFailureText(e)}`);
      return 1;
    }
    outPos += data.length;
  }
  try {
    await job.target.flush();
  } catch (e) {
    reportError(ctx, `error while writing to output image file: ${ioFailureText(e)}`);
    return 1;
  }
  return 0;
}
