import type { ImageNode } from '../../block/types.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { qemuJsonPretty } from '../format/qemu-json.js';
import { getopt } from '../getopt.js';
import { type ImageReport, allocatedBytes, imageInfoHuman, imageInfoJson } from '../image-info.js';
import { resolveBackingPath } from '../image-path.js';
import { openErrorText } from '../open-error.js';
import { openOperand, openOperandOrReport } from '../image-operand.js';
import type { CacheMode } from '../../formats/driver.js';

/** Parses --output; reports qemu-img's error and returns undefined when it is neither human nor json. */
export function parseOutputFormat(ctx: CliContext, value: string | undefined): 'human' | 'json' | undefined {
  if (value === undefined || value === 'human') return 'human';
  if (value === 'json') return 'json';
  reportError(ctx, '--output must be used with human or json as argument.');
  return undefined;
}

/** Opens one image for a read-only command (a path with -f, or an --image-opts string), reporting qemu-img's "Could not open" on failure. */
export function openForReading(
  ctx: CliContext,
  operand: string,
  options: {
    readonly format: string | undefined;
    readonly forceShare: boolean;
    readonly imageOpts?: boolean;
    readonly noBacking?: boolean;
    readonly cache?: CacheMode;
    readonly inlineIo?: boolean;
  },
): Promise<ImageNode | undefined> {
  return openOperandOrReport(ctx, operand, { ...options, imageOpts: options.imageOpts === true, readOnly: true });
}

/** `vdisk info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename` */
export async function infoCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'f:hU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'format', hasArg: true, key: 'f' },
      { name: 'output', hasArg: true, key: 'output' },
      { name: 'backing-chain', hasArg: false, key: 'backing-chain' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  let format: string | undefined;
  let output: string | undefined;
  let chain = false;
  let forceShare = false;
  let imageOpts = false;
  for (const { key, value } of parsed.options) {
    if (key === 'f') format = value;
    else if (key === 'output') output = value;
    else if (key === 'backing-chain') chain = true;
    else if (key === 'U') forceShare = true;
    else if (key === 'image-opts') imageOpts = true;
  }
  if (parsed.operands.length !== 1) return reportUsage(ctx, 'Expecting one image file name');
  const operand = parsed.operands[0] ?? '';
  const outputFormat = parseOutputFormat(ctx, output);
  if (!outputFormat) return 1;

  // The operand may be an option string; the backing files below it are paths.
  const top = await openOperand(ctx, operand, { format, imageOpts, forceShare, readOnly: true, noBacking: true });
  if (!top.ok) {
    reportError(ctx, top.message);
    return 1;
  }
  const filename = top.filename;
  const reports: ImageReport[] = [];
  const seen = new Set<string>();
  let path: string | undefined = filename;
  let fmt = format;
  while (path !== undefined) {
    if (seen.has(path)) {
      reportError(ctx, `Backing file '${path}' creates an infinite loop.`);
      return 1;
    }
    seen.add(path);
    const node = reports.length === 0 ? top.node : await openForReading(ctx, path, { format: fmt, forceShare, noBacking: true });
    if (!node) return 1;
    try {
      const info = await node.info();
      reports.push({ filename: path, info, actualSize: await allocatedBytes(path) });
      if (!chain || !info.backing) break;
      fmt = info.backing.format ?? undefined;
      path = resolveBackingPath(path, info.backing.filename);
    } catch (e) {
      reportError(ctx, openErrorText(path, e));
      return 1;
    } finally {
      await node.close();
    }
  }
  if (outputFormat === 'json') {
    const value = chain ? reports.map(imageInfoJson) : imageInfoJson(reports[0] ?? { filename, info: { format: 'raw', virtualSize: 0 }, actualSize: undefined });
    ctx.out.stdout(`${qemuJsonPretty(value)}\n`);
  } else {
    ctx.out.stdout(reports.map(imageInfoHuman).join('\n'));
  }
  return 0;
}
