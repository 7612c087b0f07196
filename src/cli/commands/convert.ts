import type { ImageNode } from '../../block/types.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import type { FormatName } from '../../formats/driver.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { formatOptions, optionHelp, parseCreateOptions, parseQemuSize, wantsHelp } from '../create-options.js';
import { ioFailureText } from '../errors-text.js';
import { ProgressPrinter } from '../format/progress.js';
import { getopt } from '../getopt.js';
import { openErrorText } from '../open-error.js';
import { toFormatName } from './create.js';
import { openForReading } from './info.js';

interface ConvertArgs {
  sourceFormat: string | undefined;
  targetFormat: string;
  optionStrings: string[];
  compress: boolean;
  progress: boolean;
  quiet: boolean;
  noCreate: boolean;
  /** Bytes of zeros that make a hole in the target (-S); 0 writes everything. */
  sparseSize: number;
  backing: string | undefined;
  backingFormat: string | undefined;
  forceShare: boolean;
  targetIsZero: boolean;
}

/** Largest request one copy step reads and writes (bounds memory). */
const CHUNK = 2 * 1024 * 1024;

/** `vdisk convert [-f fmt] [-O fmt] [-o opts] [-c] [-p] [-n] [-S size] [-B backing] [-W] [-m N] [-t cache] [-T cache] [-U] [--target-is-zero] src... dst` */
export async function convertCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hf:O:B:CcF:o:l:S:pt:T:qnm:WrU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
      { name: 'target-is-zero', hasArg: false, key: 'target-is-zero' },
      { name: 'salvage', hasArg: false, key: 'salvage' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const args: ConvertArgs = {
    sourceFormat: undefined,
    targetFormat: 'raw',
    optionStrings: [],
    compress: false,
    progress: false,
    quiet: false,
    noCreate: false,
    sparseSize: 4096,
    backing: undefined,
    backingFormat: undefined,
    forceShare: false,
    targetIsZero: false,
  };
  for (const { key, value = '' } of parsed.options) {
    switch (key) {
      case 'f': args.sourceFormat = value; break;
      case 'O': args.targetFormat = value; break;
      case 'o': args.optionStrings.push(value); break;
      case 'c': args.compress = true; break;
      case 'p': args.progress = true; break;
      case 'q': args.quiet = true; break;
      case 'n': args.noCreate = true; break;
      case 'B': args.backing = value; break;
      case 'F': args.backingFormat = value; break;
      case 'U': args.forceShare = true; break;
      case 'target-is-zero': args.targetIsZero = true; break;
      case 'S': {
        const n = parseQemuSize(value);
        if (n === undefined || n > Number.MAX_SAFE_INTEGER || n % 512 !== 0) {
          reportError(ctx, 'Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16M.');
          return 1;
        }
        args.sparseSize = n;
        break;
      }
      case 'm': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1 || n > 16) {
          reportError(ctx, 'Invalid number of coroutines. Allowed number of coroutines is between 1 and 16');
          return 1;
        }
        break;
      }
      case 'h': return reportUsage(ctx, 'see qemu-img(1) for the convert options');
      default: break; // -t, -T, -W, -C, -l, -r: accepted; vdisk's copy needs no tuning by them
    }
  }
  if (args.quiet) args.progress = false;
  if (args.optionStrings.some(wantsHelp)) {
    if (!formatOptions(args.targetFormat)) {
      reportError(ctx, `Unknown file format '${args.targetFormat}'`);
      return 1;
    }
    ctx.out.stdout(optionHelp(args.targetFormat, parsed.operands.length > 0));
    return 0;
  }
  if (parsed.operands.length < 2) {
    reportError(ctx, 'Must specify image file name');
    return 1;
  }
  if (args.backing !== undefined && args.backingFormat === undefined && !args.noCreate) {
    reportError(ctx, 'Use of backing file requires explicit backing format');
    return 1;
  }
  const targetName = parsed.operands[parsed.operands.length - 1] ?? '';
  const sourceNames = parsed.operands.slice(0, -1);

  const sources: ImageNode[] = [];
  let target: ImageNode | undefined;
  try {
    for (const name of sourceNames) {
      const node = await openForReading(ctx, name, { format: args.sourceFormat, forceShare: args.forceShare });
      if (!node) return 1;
      sources.push(node);
    }
    const total = sources.reduce((sum, s) => sum + s.length, 0);
    target = await prepareTarget(ctx, args, targetName, total);
    if (!target) return 1;
    const progress = new ProgressPrinter(args.progress ? (t) => ctx.out.stdout(t) : undefined);
    progress.set(0);
    await copyAll({ sources, target, args, progress });
    await target.flush();
    // qemu-img convert prints 100% once more on success (qemu_progress_print(100, 0)) before the newline.
    progress.set(100);
    progress.end();
    return 0;
  } catch (e) {
    reportError(ctx, isVdiskError(e) || e instanceof Error ? e.message : String(e));
    return 1;
  } finally {
    if (target) await target.close().catch(() => undefined);
    for (const s of sources) await s.close().catch(() => undefined);
  }
}

async function prepareTarget(ctx: CliContext, args: ConvertArgs, name: string, size: number): Promise<ImageNode | undefined> {
  const format = toFormatName(args.targetFormat);
  if (!formatOptions(args.targetFormat) || format === undefined) {
    reportError(ctx, `Unknown file format '${args.targetFormat}'`);
    return undefined;
  }
  if (!args.noCreate) {
    let backingFormat: FormatName | undefined;
    if (args.backingFormat !== undefined) {
      backingFormat = toFormatName(args.backingFormat);
      if (backingFormat === undefined) {
        reportError(ctx, `Unknown backing file format '${args.backingFormat}'`);
        return undefined;
      }
    }
    try {
      const given = parseCreateOptions(args.targetFormat, args.optionStrings);
      const options: Record<string, string> = {};
      for (const [key, opt] of given) if (key !== 'size') options[key] = opt.value;
      if (args.compress && format !== 'qcow2') {
        throw new VdiskError('ENOTSUP', `Compression not supported for this file format`, { field: 'compress' });
      }
      await ctx.engine.createImage(name, format, {
        size,
        options,
        ...(args.backing !== undefined ? { backingFile: args.backing } : {}),
        ...(backingFormat !== undefined ? { backingFormat } : {}),
      });
    } catch (e) {
      reportError(ctx, `${name}: error while converting ${args.targetFormat}: ${e instanceof Error ? e.message : String(e)}`);
      return undefined;
    }
  }
  try {
    return await ctx.engine.openImage(name, { format, readOnly: false });
  } catch (e) {
    reportError(ctx, `Could not open '${name}': ${openErrorText(name, e)}`);
    return undefined;
  }
}

interface CopyJob {
  readonly sources: readonly ImageNode[];
  readonly target: ImageNode;
  readonly args: ConvertArgs;
  readonly progress: ProgressPrinter;
}

/** What one range of a source becomes in the target. */
type Plan = 'data' | 'zero' | 'skip';

function planFor(x: { readonly present?: boolean; readonly allocated?: boolean; readonly zero: boolean; readonly data: boolean }, job: CopyJob, targetZeroed: boolean): Plan {
  const present = x.present ?? x.allocated ?? true;
  if (job.args.backing !== undefined && !present) return 'skip'; // the target's backing provides it
  if (x.zero || !x.data) return targetZeroed ? 'skip' : 'zero';
  return 'data';
}

/** Copies every source into the target, one after the other, reading only what block status calls data. */
async function copyAll(job: CopyJob): Promise<void> {
  const { target, args } = job;
  const targetZeroed = (!args.noCreate || args.targetIsZero) && args.backing === undefined;
  const statusOf = async (src: ImageNode, off: number, len: number): Promise<Array<{ length: number; plan: Plan }>> => {
    if (args.backing !== undefined) {
      const layer = await src.layerStatus(off, len);
      return layer.map((x) => ({ length: x.length, plan: planFor(x, job, targetZeroed) }));
    }
    const chain = await src.blockStatus(off, len);
    return chain.map((x) => ({ length: x.length, plan: planFor(x, job, targetZeroed) }));
  };
  // Progress counts the bytes that need copying, like qemu-img's allocated_sectors.
  let toCopy = 0;
  for (const src of job.sources) {
    for (let pos = 0; pos < src.length; ) {
      const st = await statusOf(src, pos, Math.min(src.length - pos, 2 ** 32));
      for (const s of st) if (s.plan !== 'skip') toCopy += s.length;
      const step = st.reduce((a, s) => a + s.length, 0);
      if (step <= 0) break;
      pos += step;
    }
  }
  let done = 0;
  const clusterSize = target.clusterSize ?? 65536;
  const chunkSize = args.compress ? clusterSize : CHUNK;
  const buffer = new Uint8Array(chunkSize);
  let base = 0;
  for (const src of job.sources) {
    for (let pos = 0; pos < src.length; ) {
      const statuses = await statusOf(src, pos, Math.min(src.length - pos, 2 ** 32));
      let advanced = 0;
      for (const s of statuses) {
        const start = pos + advanced;
        advanced += s.length;
        if (s.plan === 'skip') continue;
        for (let off = start; off < start + s.length; ) {
          // Compressed output goes cluster by cluster, aligned in the target.
          const limit = args.compress ? clusterSize - ((base + off) % clusterSize) : chunkSize;
          const len = Math.min(limit, start + s.length - off);
          if (s.plan === 'zero') {
            await writeZeroesAt(target, base + off, len, args.sparseSize === 0);
          } else {
            const buf = buffer.subarray(0, len);
            try {
              await src.read(off, buf);
            } catch (e) {
              throw new VdiskError('EIO', `error while reading at byte ${base + off}: ${ioFailureText(e)}`, { offset: base + off }, { cause: e });
            }
            await writeData(target, base + off, buf, { sparse: args.sparseSize, zeroed: targetZeroed, compress: args.compress, clusterSize });
          }
          off += len;
          done += len;
          job.progress.set(toCopy === 0 ? 100 : (100 * done) / toCopy);
        }
      }
      if (advanced <= 0) throw new VdiskError('EIO', `block status of '${src.filename}' returned nothing at ${pos}`, { file: src.filename });
      pos += advanced;
    }
    base += src.length;
  }
  if (toCopy === 0) job.progress.set(100);
}

function isZero(buf: Uint8Array): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

async function writeZeroesAt(target: ImageNode, offset: number, length: number, allocate: boolean): Promise<void> {
  try {
    if (allocate) await target.write(offset, new Uint8Array(length));
    else await target.writeZeroes(offset, length, { mayUnmap: true });
  } catch (e) {
    throw new VdiskError('EIO', `error while writing at byte ${offset}: ${ioFailureText(e)}`, { offset }, { cause: e });
  }
}

/**
 * Writes one buffer, leaving holes where it holds `sparse`-sized, aligned runs
 * of zeros: a fresh target already reads zeros there; an old one gets them zeroed.
 */
async function writeData(
  target: ImageNode,
  offset: number,
  buf: Uint8Array,
  opts: { readonly sparse: number; readonly zeroed: boolean; readonly compress: boolean; readonly clusterSize: number },
): Promise<void> {
  try {
    if (opts.compress) {
      if (isZero(buf)) {
        if (!opts.zeroed) await target.writeZeroes(offset, buf.length, { mayUnmap: true });
        return;
      }
      if (buf.length === opts.clusterSize && offset % opts.clusterSize === 0) await target.writeCompressed(offset, buf);
      else await target.write(offset, buf);
      return;
    }
    if (opts.sparse === 0) {
      await target.write(offset, buf);
      return;
    }
    // Walk the buffer in sparse-size steps aligned to the disk, grouping runs of data and of zeros.
    let runStart = 0;
    let runZero: boolean | undefined;
    const flush = async (end: number): Promise<void> => {
      if (end <= runStart || runZero === undefined) return;
      if (runZero) {
        if (!opts.zeroed) await target.writeZeroes(offset + runStart, end - runStart, { mayUnmap: true });
      } else await target.write(offset + runStart, buf.subarray(runStart, end));
    };
    for (let i = 0; i < buf.length; ) {
      const step = Math.min(opts.sparse - ((offset + i) % opts.sparse), buf.length - i);
      const zero = isZero(buf.subarray(i, i + step));
      if (zero !== runZero) {
        await flush(i);
        runStart = i;
        runZero = zero;
      }
      i += step;
    }
    await flush(buf.length);
  } catch (e) {
    if (isVdiskError(e) && e.message.startsWith('error while writing')) throw e;
    throw new VdiskError('EIO', `error while writing at byte ${offset}: ${ioFailureText(e)}`, { offset }, { cause: e });
  }
}
