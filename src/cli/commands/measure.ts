/** `vdisk measure`: qemu-img measure's sizes for a new image of a given size or holding an existing image. */
import type { ImageNode } from '../../block/types.js';
import { isVdiskError } from '../../errors.js';
import type { JsonValue } from '../../formats/driver.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { type GivenOption, formatOptions, parseCreateOptions, parseQemuSize } from '../create-options.js';
import { qdictOrdered } from '../format/qdict-order.js';
import { qemuJsonPretty } from '../format/qemu-json.js';
import { getopt } from '../getopt.js';
import { DataClusterCounter, type Qcow2Geometry, qcow2BitmapsSize, qcow2FullyAllocatedSize, qcow2TooLarge } from '../measure-size.js';
import { INVALID_SIZE_TEXT } from './create.js';
import { openForReading, parseOutputFormat } from './info.js';

/** QEMU's BlockMeasureInfo. */
interface MeasureInfo {
  readonly required: number;
  readonly fullyAllocated: number;
  readonly bitmaps?: number;
}

interface MeasureArgs {
  sourceFormat: string | undefined;
  targetFormat: string;
  optionStrings: string[];
  size: number | undefined;
  output: string | undefined;
  forceShare: boolean;
  snapshot: boolean;
  /** --image-opts: the filename is an option string. */
  imageOpts: boolean;
}

/** `vdisk measure [--output=ofmt] [-O fmt] [-o options] [--size N | [-f fmt] [-U] filename]` */
export async function measureCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hf:O:o:l:U',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'output', hasArg: true, key: 'output' },
      { name: 'size', hasArg: true, key: 'size' },
      { name: 'force-share', hasArg: false, key: 'U' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const args: MeasureArgs = { sourceFormat: undefined, targetFormat: 'raw', optionStrings: [], size: undefined, output: undefined, forceShare: false, snapshot: false, imageOpts: false };
  for (const { key, value = '' } of parsed.options) {
    switch (key) {
      case 'h': return reportUsage(ctx, 'see qemu-img(1) for the measure options');
      case 'f': args.sourceFormat = value; break;
      case 'O': args.targetFormat = value; break;
      case 'o': args.optionStrings.push(value); break;
      case 'l': args.snapshot = true; break;
      case 'U': args.forceShare = true; break;
      case 'image-opts': args.imageOpts = true; break;
      case 'output': args.output = value; break;
      case 'size': {
        const n = parseQemuSize(value);
        if (n === undefined) {
          reportError(ctx, INVALID_SIZE_TEXT);
          return 1;
        }
        if (n > Number.MAX_SAFE_INTEGER) {
          reportError(ctx, `Invalid image size specified. Must be between 0 and ${Number.MAX_SAFE_INTEGER}.`);
          return 1;
        }
        args.size = n;
        break;
      }
      default: break; // --object: accepted, nothing to set up
    }
  }
  const output = parseOutputFormat(ctx, args.output);
  if (output === undefined) return 1;
  if (parsed.operands.length > 1) {
    reportError(ctx, 'At most one filename argument is allowed.');
    return 1;
  }
  const filename = parsed.operands[0];
  if (filename === undefined && (args.sourceFormat !== undefined || args.snapshot || args.imageOpts)) {
    reportError(ctx, '--image-opts, -f, and -l require a filename argument.');
    return 1;
  }
  if (filename !== undefined && args.size !== undefined) {
    reportError(ctx, '--size N cannot be used together with a filename.');
    return 1;
  }
  if (filename === undefined && args.size === undefined) {
    reportError(ctx, 'Either --size N or one filename must be specified.');
    return 1;
  }
  let source: ImageNode | undefined;
  try {
    if (filename !== undefined) {
      source = await openForReading(ctx, filename, { format: args.sourceFormat, forceShare: args.forceShare, imageOpts: args.imageOpts });
      if (!source) return 1;
    }
    const info = await measure(ctx, args, source);
    if (!info) return 1;
    if (output === 'human') {
      let text = `required size: ${info.required}\nfully allocated size: ${info.fullyAllocated}\n`;
      if (info.bitmaps !== undefined) text += `bitmaps size: ${info.bitmaps}\n`;
      ctx.out.stdout(text);
    } else {
      const obj: { [key: string]: JsonValue } = { required: info.required, 'fully-allocated': info.fullyAllocated };
      if (info.bitmaps !== undefined) obj.bitmaps = info.bitmaps;
      ctx.out.stdout(`${qemuJsonPretty(qdictOrdered(obj))}\n`);
    }
    return 0;
  } catch (e) {
    reportError(ctx, isVdiskError(e) || e instanceof Error ? e.message : String(e));
    return 1;
  } finally {
    await source?.close().catch(() => undefined);
  }
}

/** Checks the target format and its -o options, then measures; reports qemu-img's errors and returns undefined on failure. */
async function measure(ctx: CliContext, args: MeasureArgs, source: ImageNode | undefined): Promise<MeasureInfo | undefined> {
  const format = args.targetFormat;
  if (!formatOptions(format)) {
    reportError(ctx, `Unknown file format '${format}'`);
    return undefined;
  }
  if (format !== 'raw' && format !== 'qcow2') {
    reportError(ctx, `Block driver '${format}' does not support size measurement`);
    return undefined;
  }
  let given: Map<string, GivenOption>;
  try {
    given = parseCreateOptions(format, args.optionStrings.length > 0 ? [args.optionStrings.join(',')] : []);
  } catch (e) {
    reportError(ctx, e instanceof Error ? e.message : String(e));
    reportError(ctx, `Invalid options for file format '${format}'`);
    return undefined;
  }
  const option = (name: string): string | undefined => given.get(name)?.value;
  const sizeOption = option('size');
  const size = args.size ?? (sizeOption !== undefined ? Number(sizeOption) : 0);
  if (format === 'raw') {
    const required = source ? source.length : Math.ceil(size / 512) * 512;
    return { required, fullyAllocated: required };
  }
  const settings = qcow2Settings(ctx, option);
  if (!settings) return undefined;
  const { geometry, version, preallocation } = settings;
  const cs = geometry.clusterSize;
  if (qcow2TooLarge(Math.ceil(size / cs) * cs, geometry)) {
    reportError(ctx, 'The image size is too large (try using a larger cluster size)');
    return undefined;
  }
  const virtualSize = Math.ceil((source ? source.length : size) / cs) * cs;
  let required = 0;
  if (source) {
    if (option('backing_file') !== undefined) required = virtualSize; // nothing known about what the backing holds
    else required = await dataClusterBytes(source, cs);
  }
  if (preallocation === 'full' || preallocation === 'falloc') required = virtualSize;
  const fullyAllocated = qcow2FullyAllocatedSize(virtualSize, geometry);
  const info: MeasureInfo = { required: fullyAllocated - virtualSize + required, fullyAllocated };
  if (version >= 3 && source?.bitmaps !== undefined) {
    const bitmaps = await source.bitmaps.list();
    return { ...info, bitmaps: qcow2BitmapsSize(bitmaps, source.length, cs) };
  }
  return info;
}

/** The qcow2 options measure looks at, checked as qcow2_measure checks them (no cross-checks beyond those). */
function qcow2Settings(
  ctx: CliContext,
  option: (name: string) => string | undefined,
): { geometry: Qcow2Geometry; version: number; preallocation: string } | undefined {
  const extendedL2 = option('extended_l2') === 'on';
  const clusterSize = Number(option('cluster_size') ?? 65536);
  const minimum = extendedL2 ? 16384 : 512;
  if (!Number.isInteger(clusterSize) || clusterSize < 512 || clusterSize > 2 * 1024 * 1024 || (clusterSize & (clusterSize - 1)) !== 0) {
    reportError(ctx, 'Cluster size must be a power of two between 512 and 2048k');
    return undefined;
  }
  if (clusterSize < minimum) {
    reportError(ctx, `Extended L2 entries are only supported with cluster sizes of at least ${minimum} bytes`);
    return undefined;
  }
  const compat = option('compat') ?? '1.1';
  const versions: Readonly<Record<string, number>> = { '0.10': 2, v2: 2, '1.1': 3, v3: 3 };
  const version = versions[compat];
  if (version === undefined) {
    reportError(ctx, `Invalid compatibility level: '${compat}'`);
    return undefined;
  }
  const refcountBits = Number(option('refcount_bits') ?? 16);
  if (!Number.isInteger(refcountBits) || refcountBits < 1 || refcountBits > 64 || (refcountBits & (refcountBits - 1)) !== 0) {
    reportError(ctx, 'Refcount width must be a power of two and may not exceed 64 bits');
    return undefined;
  }
  if (version < 3 && refcountBits !== 16) {
    reportError(ctx, 'Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
    return undefined;
  }
  const preallocation = option('preallocation') ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(preallocation)) {
    reportError(ctx, `invalid parameter value: ${preallocation}`);
    return undefined;
  }
  return { geometry: { clusterSize, refcountOrder: Math.log2(refcountBits), extendedL2 }, version, preallocation };
}

/** Bytes of the target clusters that hold data of the source (zero and unallocated ranges need none). */
async function dataClusterBytes(source: ImageNode, clusterSize: number): Promise<number> {
  const counter = new DataClusterCounter(clusterSize);
  for (let pos = 0; pos < source.length; ) {
    const extents = await source.blockStatus(pos, Math.min(source.length - pos, 2 ** 32));
    let step = 0;
    for (const x of extents) {
      if (x.data && !x.zero) counter.add(pos + step, x.length);
      step += x.length;
    }
    if (step <= 0) break;
    pos += step;
  }
  return counter.total;
}
