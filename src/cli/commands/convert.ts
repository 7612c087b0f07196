import type { ImageNode } from '../../block/types.js';
import { VdiskError, isVdiskError } from '../../errors.js';
import type { CacheMode, FormatName } from '../../formats/driver.js';
import { parseCacheMode } from '../cache-mode.js';
import { compatWarnings } from '../compat-warnings.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { formatOptions, optionHelp, parseCreateOptions, parseQemuSize, wantsHelp } from '../create-options.js';
import { assertTargetTakesBitmaps, checkSourceBitmaps, copyBitmaps } from '../convert-bitmaps.js';
import { type CopySettings, copyAll } from '../convert-copy.js';
import { commandProgress, progressModeOption, PROGRESS_LONG_OPTION } from '../command-progress.js';
import { type ProgressMode } from '../format/progress.js';
import { getopt } from '../getopt.js';
import { openOperandOrReport } from '../image-operand.js';
import { toFormatName } from './create.js';
import { openForReading } from './info.js';

interface ConvertArgs {
  sourceFormat: string | undefined;
  targetFormat: string;
  optionStrings: string[];
  compress: boolean;
  progress: boolean;
  progressMode: ProgressMode | undefined;
  quiet: boolean;
  noCreate: boolean;
  /** Bytes of zeros that make a hole in the target (-S); 0 writes everything. */
  sparseSize: number;
  backing: string | undefined;
  backingFormat: string | undefined;
  forceShare: boolean;
  targetIsZero: boolean;
  /** Parallel requests (-m); qemu-img's default is 8. */
  parallel: number;
  /** -W: writes may complete out of order. */
  outOfOrder: boolean;
  /** -C: copy data between host files in the kernel (copy_file_range), not through memory. */
  copyOffload: boolean;
  /** -S was given (-C cannot honour it: the copy never sees the bytes). */
  sparseGiven: boolean;
  salvage: boolean;
  /** -t: qemu-img convert writes with cache=unsafe unless told otherwise (no sync at the end). */
  targetCache: CacheMode;
  /** -T */
  sourceCache: CacheMode;
  /** --image-opts: every source operand is an option string. */
  imageOpts: boolean;
  /** --target-image-opts: the target operand is an option string (only with -n: the target must exist). */
  targetImageOpts: boolean;
  /** --bitmaps: the source's persistent bitmaps are copied too. */
  bitmaps: boolean;
  /** --skip-broken-bitmaps: inconsistent source bitmaps are left out instead of failing. */
  skipBrokenBitmaps: boolean;
}

/** `vdisk convert [-f fmt] [-O fmt] [-o opts] [-c] [-p] [-n] [-S size] [-B backing] [-W] [-m N] [-t cache] [-T cache] [-U] [--target-is-zero] [--bitmaps [--skip-broken-bitmaps]] src... dst` */
export async function convertCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hf:O:B:CcF:o:l:S:pt:T:qnm:WrU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'target-image-opts', hasArg: false, key: 'target-image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
      { name: 'target-is-zero', hasArg: false, key: 'target-is-zero' },
      { name: 'salvage', hasArg: false, key: 'salvage' },
      { name: 'bitmaps', hasArg: false, key: 'bitmaps' },
      { name: 'skip-broken-bitmaps', hasArg: false, key: 'skip-broken-bitmaps' },
      PROGRESS_LONG_OPTION,
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const args: ConvertArgs = {
    sourceFormat: undefined,
    targetFormat: 'raw',
    optionStrings: [],
    compress: false,
    progress: false,
    progressMode: undefined,
    quiet: false,
    noCreate: false,
    sparseSize: 4096,
    backing: undefined,
    backingFormat: undefined,
    forceShare: false,
    targetIsZero: false,
    parallel: 8,
    outOfOrder: false,
    copyOffload: false,
    sparseGiven: false,
    salvage: false,
    targetCache: 'unsafe',
    sourceCache: 'writeback',
    imageOpts: false,
    targetImageOpts: false,
    bitmaps: false,
    skipBrokenBitmaps: false,
  };
  for (const { key, value = '' } of parsed.options) {
    switch (key) {
      case 'f': args.sourceFormat = value; break;
      case 'O': args.targetFormat = value; break;
      case 'o': args.optionStrings.push(value); break;
      case 'c': args.compress = true; break;
      case 'p': args.progress = true; break;
      case 'progress': {
        const mode = progressModeOption(ctx, value);
        if (mode === undefined) return 1;
        args.progressMode = mode;
        break;
      }
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
        args.sparseGiven = true;
        break;
      }
      case 'm': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1 || n > 16) {
          reportError(ctx, 'Invalid number of coroutines. Allowed number of coroutines is between 1 and 16');
          return 1;
        }
        args.parallel = n;
        break;
      }
      case 'W': args.outOfOrder = true; break;
      case 'C': args.copyOffload = true; break;
      case 'salvage': args.salvage = true; break;
      case 'image-opts': args.imageOpts = true; break;
      case 'target-image-opts': args.targetImageOpts = true; break;
      case 'bitmaps': args.bitmaps = true; break;
      case 'skip-broken-bitmaps': args.skipBrokenBitmaps = true; break;
      case 't':
      case 'T': {
        const mode = parseCacheMode(value);
        if (mode === undefined) {
          reportError(ctx, `Invalid ${key === 'T' ? 'source ' : ''}cache option: ${value}`);
          return 1;
        }
        if (key === 't') args.targetCache = mode;
        else args.sourceCache = mode;
        break;
      }
      case 'h': return reportUsage(ctx, 'see qemu-img(1) for the convert options');
      default: break; // -l, -r: accepted; vdisk's copy needs no tuning by them
    }
  }
  // qemu-img's checks, in its order: a kernel copy never sees the bytes it copies.
  const conflict = args.copyOffload
    ? args.compress
      ? 'Cannot enable copy offloading when -c is used'
      : args.sparseGiven
        ? 'Cannot enable copy offloading when -S is used'
        : args.salvage
          ? 'Cannot use copy offloading in salvaging mode'
          : undefined
    : undefined;
  if (conflict !== undefined) {
    reportError(ctx, conflict);
    return 1;
  }
  if (args.skipBrokenBitmaps && !args.bitmaps) {
    reportError(ctx, 'Use of --skip-broken-bitmaps requires --bitmaps');
    return 1;
  }
  if (args.targetImageOpts && !args.noCreate) {
    reportError(ctx, '--target-image-opts requires use of -n flag');
    return 1;
  }
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
      // The copy loop is the sources' and the target's only user: do their cached I/O inline.
      const node = await openForReading(ctx, name, {
        format: args.sourceFormat,
        forceShare: args.forceShare,
        cache: args.sourceCache,
        inlineIo: true,
        imageOpts: args.imageOpts,
      });
      if (!node) return 1;
      sources.push(node);
    }
    const [first] = sources;
    if (args.bitmaps && (sources.length > 1 || !first)) {
      reportError(ctx, 'Copying bitmaps only possible with single source');
      return 1;
    }
    if (args.bitmaps && first && !(await checkSourceBitmaps(ctx, first, args.skipBrokenBitmaps))) return 1;
    const total = sources.reduce((sum, s) => sum + s.length, 0);
    target = await prepareTarget(ctx, args, targetName, total);
    if (!target) return 1;
    if (args.bitmaps) assertTargetTakesBitmaps(target);
    const progress = commandProgress(ctx, { p: args.progress, quiet: args.quiet, mode: args.progressMode }, { phase: 'convert' });
    progress.set(0);
    const settings: CopySettings = {
      sparseSize: args.sparseSize,
      compress: args.compress,
      hasBacking: args.backing !== undefined,
      // A raw image created on a device holds what the device held: its zeros are written too.
      targetZeroed: ((!args.noCreate && target.createdZeroed !== false) || args.targetIsZero) && args.backing === undefined,
      parallel: args.parallel,
      outOfOrder: args.outOfOrder,
      copyOffload: args.copyOffload,
    };
    await copyAll({ sources, target, settings, progress });
    if (args.bitmaps && first) await copyBitmaps(ctx, first, target);
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
      for (const line of compatWarnings(args.targetFormat, options)) ctx.out.stderr(line);
    } catch (e) {
      reportError(ctx, `${name}: error while converting ${args.targetFormat}: ${e instanceof Error ? e.message : String(e)}`);
      return undefined;
    }
  }
  // Under --target-image-opts the string names the format (or leaves it to the probe) and -O only chose the checks above.
  return openOperandOrReport(ctx, name, {
    format: args.targetImageOpts ? undefined : format,
    imageOpts: args.targetImageOpts,
    readOnly: false,
    cache: args.targetCache,
    inlineIo: true,
  });
}
