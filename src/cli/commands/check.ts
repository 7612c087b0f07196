/**
 * `vdisk check`: qemu-img check (qemu-img.c img_check / collect_image_check).
 * The format's checker prints its findings on stderr as it goes; the summary
 * goes to stdout. A repair is followed by a second, read-only check whose
 * result is printed with the first one's "fixed" counts, as qemu-img does.
 * Exit: 0 clean, 1 check failed, 2 corruptions, 3 leaks only, 63 no checks.
 */
import type { CacheMode, CheckReport, JsonValue, RepairMode } from '../../formats/driver.js';
import { cacheOption } from '../cache-mode.js';
import type { ImageNode } from '../../block/types.js';
import { isVdiskError } from '../../errors.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { describeError } from '../errors-text.js';
import { qemuJsonPretty } from '../format/qemu-json.js';
import { qdictOrdered } from '../format/qdict-order.js';
import { cFixed } from '../format/size-text.js';
import { qemuFormatName } from '../format-name.js';
import { getopt } from '../getopt.js';
import { openOperandOrReport } from '../image-operand.js';
import { toFormatName } from './create.js';
import { commandProgress, progressModeOption, PROGRESS_LONG_OPTION } from '../command-progress.js';
import { type ProgressMode } from '../format/progress.js';
import { parseOutputFormat } from './info.js';

/** Exit status of qemu-img check when the format has no checker. */
const EXIT_NOT_SUPPORTED = 63;

interface CheckArgs {
  format: string | undefined;
  repair: RepairMode;
  output: string | undefined;
  quiet: boolean;
  forceShare: boolean;
  /** --image-opts: the operand is an option string. */
  imageOpts: boolean;
  /** -T: the image's cache mode (check only reads it, unless repairing). */
  cache: CacheMode | undefined;
}

/** `vdisk check [-f fmt] [--output=ofmt] [-r leaks|all] [-T cache] [-q] [-U] filename` */
export async function checkCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hf:r:T:qU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'format', hasArg: true, key: 'f' },
      { name: 'repair', hasArg: true, key: 'r' },
      { name: 'output', hasArg: true, key: 'output' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
      PROGRESS_LONG_OPTION,
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const args: CheckArgs = { format: undefined, repair: 'none', output: undefined, quiet: false, forceShare: false, imageOpts: false, cache: undefined };
  // qemu-img check has no -p; --progress=json|text is vdisk's, for long repairs.
  let progressMode: ProgressMode | undefined;
  for (const { key, value = '' } of parsed.options) {
    if (key === 'f') args.format = value;
    else if (key === 'output') args.output = value;
    else if (key === 'progress') {
      progressMode = progressModeOption(ctx, value);
      if (progressMode === undefined) return 1;
    }
    else if (key === 'q') args.quiet = true;
    else if (key === 'U') args.forceShare = true;
    else if (key === 'image-opts') args.imageOpts = true;
    else if (key === 'T') {
      const checked = cacheOption(value, 'source');
      if (!checked.ok) {
        reportError(ctx, checked.message);
        return 1;
      }
      args.cache = checked.mode;
    }
    else if (key === 'h') return reportUsage(ctx, 'see qemu-img(1) for the check options');
    else if (key === 'r') {
      if (value === 'leaks') args.repair = 'leaks';
      else if (value === 'all') args.repair = 'all';
      else return reportUsage(ctx, `Unknown option value for -r (expecting 'leaks' or 'all'): ${value}`);
    }
  }
  if (parsed.operands.length !== 1) return reportUsage(ctx, 'Expecting one image file name');
  const filename = parsed.operands[0] ?? '';
  const outputFormat = parseOutputFormat(ctx, args.output);
  if (!outputFormat) return 1;

  const node = await openForCheck(ctx, filename, args);
  if (!node) return 1;
  // The block layer's check has no progress hook: the start and the end are reported.
  const progress = commandProgress(ctx, { p: false, quiet: args.quiet, mode: progressMode }, { phase: 'check' });
  try {
    progress.setTotal(node.length);
    progress.set(0);
    const status = await runCheck(ctx, node, { filename, args, json: outputFormat === 'json' });
    progress.bytes(node.length, node.length);
    progress.end();
    return status;
  } finally {
    await node.close().catch(() => undefined);
  }
}

async function openForCheck(ctx: CliContext, filename: string, args: CheckArgs): Promise<ImageNode | undefined> {
  const format = args.format === undefined ? undefined : toFormatName(args.format);
  if (args.format !== undefined && format === undefined) {
    reportError(ctx, `Unknown file format '${args.format}'`);
    return undefined;
  }
  const readOnly = args.repair === 'none';
  if (args.forceShare && !readOnly) {
    reportError(ctx, `Could not open '${filename}': force-share=on can only be used with read-only images`);
    return undefined;
  }
  // noRepair: an image left dirty or in use is what check is asked to report on.
  return openOperandOrReport(ctx, filename, {
    format: args.format,
    imageOpts: args.imageOpts,
    readOnly,
    forceShare: args.forceShare,
    cache: args.cache,
    noBacking: true,
    noRepair: true,
  });
}

type CheckOutcome = { readonly ok: true; readonly report: CheckReport } | { readonly ok: false; readonly status: number };

async function collect(ctx: CliContext, node: ImageNode, repair: RepairMode): Promise<CheckOutcome> {
  let report: CheckReport;
  try {
    report = await node.check(repair);
  } catch (e) {
    if (isVdiskError(e) && e.code === 'ENOTSUP') {
      reportError(ctx, 'This image format does not support checks');
      return { ok: false, status: EXIT_NOT_SUPPORTED };
    }
    reportError(ctx, `Check failed: ${describeError(e)}`);
    return { ok: false, status: 1 };
  }
  for (const line of report.messages) ctx.out.stderr(`${line}\n`);
  return { ok: true, report };
}

async function runCheck(
  ctx: CliContext,
  node: ImageNode,
  run: { readonly filename: string; readonly args: CheckArgs; readonly json: boolean },
): Promise<number> {
  const { args, json } = run;
  const print = (text: string): void => {
    if (!args.quiet) ctx.out.stdout(text);
  };
  const first = await collect(ctx, node, args.repair);
  if (!first.ok) return first.status;
  let report = first.report;
  if (report.corruptionsFixed > 0 || report.leaksFixed > 0) {
    if (!json) {
      print(
        'The following inconsistencies were found and repaired:\n\n' +
          `    ${report.leaksFixed} leaked clusters\n    ${report.corruptionsFixed} corruptions\n\n` +
          'Double checking the fixed image now...\n',
      );
    }
    const second = await collect(ctx, node, 'none');
    if (!second.ok) return second.status;
    report = { ...second.report, corruptionsFixed: report.corruptionsFixed, leaksFixed: report.leaksFixed };
  }
  const formatName = qemuFormatName(node.format);
  print(json ? `${qemuJsonPretty(checkJson(run.filename, formatName, report))}\n` : checkHuman(report));
  if (report.checkErrors > 0) {
    reportError(ctx, 'Check failed');
    return 1;
  }
  if (report.corruptions > 0) return 2;
  if (report.leaks > 0) return 3;
  return 0;
}

/** dump_human_image_check. */
export function checkHuman(r: CheckReport): string {
  let out = '';
  if (r.corruptions === 0 && r.leaks === 0 && r.checkErrors === 0) {
    out += 'No errors were found on the image.\n';
  } else {
    if (r.corruptions > 0) {
      out += `\n${r.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n`;
    }
    if (r.leaks > 0) {
      out += `\n${r.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n`;
    }
    if (r.checkErrors > 0) out += `\n${r.checkErrors} internal errors have occurred during the check.\n`;
  }
  const total = r.totalClusters ?? 0;
  const allocated = r.allocatedClusters ?? 0;
  if (total !== 0 && allocated !== 0) {
    const pct = (n: number, of: number): string => cFixed((n * 100) / of, 2);
    out +=
      `${allocated}/${total} = ${pct(allocated, total)}% allocated, ` +
      `${pct(r.fragmentedClusters ?? 0, allocated)}% fragmented, ${pct(r.compressedClusters ?? 0, allocated)}% compressed clusters\n`;
  }
  if (r.imageEndOffset) out += `Image end offset: ${r.imageEndOffset}\n`;
  return out;
}

/** The ImageCheck QAPI object: optional members present only when non-zero, in QDict order. */
export function checkJson(filename: string, format: string, r: CheckReport): JsonValue {
  const obj: { [key: string]: JsonValue } = { filename, format, 'check-errors': r.checkErrors };
  const optional: Array<[string, number | undefined]> = [
    ['image-end-offset', r.imageEndOffset],
    ['corruptions', r.corruptions],
    ['leaks', r.leaks],
    ['corruptions-fixed', r.corruptionsFixed],
    ['leaks-fixed', r.leaksFixed],
    ['total-clusters', r.totalClusters],
    ['allocated-clusters', r.allocatedClusters],
    ['fragmented-clusters', r.fragmentedClusters],
    ['compressed-clusters', r.compressedClusters],
  ];
  for (const [key, value] of optional) if (value !== undefined && value !== 0) obj[key] = value;
  return qdictOrdered(obj);
}
