import { VdiskError } from '../../errors.js';
import type { FormatName } from '../../formats/driver.js';
import { compatWarnings } from '../compat-warnings.js';
import { type CliContext, PROGRAM, reportError, reportUsage } from '../context.js';
import { formatOptions, formattingOptions, optionHelp, parseCreateOptions, parseQemuSize, wantsHelp } from '../create-options.js';
import { getopt } from '../getopt.js';
import { resolveBackingPath } from '../image-path.js';
import { openErrorText } from '../open-error.js';
import { createFailureText } from '../errors-text.js';

/** Formats vdisk can open as a backing file or create, by qemu-img's names. */
export function toFormatName(name: string): FormatName | undefined {
  if (name === 'raw' || name === 'qcow2') return name;
  if (name === 'ploop' || name === 'parallels') return 'ploop';
  return undefined;
}

export const INVALID_SIZE_TEXT =
  'Invalid image size specified. You may use k, M, G, T, P or E suffixes for\nvdisk: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.';

/** Parses an image size operand as qemu-img's cvtnum("image size") does; reports and returns undefined on error. */
export function parseImageSize(ctx: CliContext, text: string): number | undefined {
  const n = parseQemuSize(text);
  if (n === undefined) {
    reportError(ctx, INVALID_SIZE_TEXT);
    return undefined;
  }
  if (n > Number.MAX_SAFE_INTEGER) {
    reportError(ctx, `Invalid image size specified. Must be between 0 and ${Number.MAX_SAFE_INTEGER}.`);
    return undefined;
  }
  return n;
}

interface CreateArgs {
  format: string;
  optionStrings: string[];
  backing?: string;
  backingFormat?: string;
  unsafe: boolean;
  quiet: boolean;
}

/** `vdisk create [-f fmt] [-o options] [-b backing] [-F backing_fmt] [-u] [-q] filename [size]` */
export async function createCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'F:b:f:ho:quU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const args: CreateArgs = { format: 'raw', optionStrings: [], unsafe: false, quiet: false };
  for (const { key, value = '' } of parsed.options) {
    if (key === 'f') args.format = value;
    else if (key === 'o') args.optionStrings.push(value);
    else if (key === 'b') args.backing = value;
    else if (key === 'F') args.backingFormat = value;
    else if (key === 'u') args.unsafe = true;
    else if (key === 'q') args.quiet = true;
    else if (key === 'h') return reportUsage(ctx, 'see qemu-img(1) for the create options');
  }
  const [filename, sizeText, extra] = parsed.operands;
  if (args.optionStrings.some(wantsHelp)) {
    if (!formatOptions(args.format)) {
      reportError(ctx, `Unknown file format '${args.format}'`);
      return 1;
    }
    ctx.out.stdout(optionHelp(args.format, filename !== undefined));
    return 0;
  }
  if (filename === undefined) return reportUsage(ctx, 'Expecting image file name');
  if (extra !== undefined) return reportUsage(ctx, `Unexpected argument: ${extra}`);
  let size: number | undefined;
  if (sizeText !== undefined) {
    size = parseImageSize(ctx, sizeText);
    if (size === undefined) return 1;
  }
  try {
    await createImageFile(ctx, { ...args, filename, size });
    return 0;
  } catch (e) {
    const message = createFailureText(filename, e);
    // qemu-img 7.2 prints this hint without a final newline; scripts see the same bytes.
    if (message.includes('\nDetected format of ')) ctx.out.stderr(`${PROGRAM}: ${filename}: ${message}`);
    else reportError(ctx, `${filename}: ${message}`);
    return 1;
  }
}

/** bdrv_img_create: checks, the "Formatting" line, then the engine's create. Throws VdiskError with qemu-img's texts. */
async function createImageFile(ctx: CliContext, args: CreateArgs & { filename: string; size: number | undefined }): Promise<void> {
  const format = toFormatName(args.format);
  if (!formatOptions(args.format) || format === undefined) {
    throw new VdiskError('EINVAL', `Unknown file format '${args.format}'`, { field: 'format' });
  }
  const given = parseCreateOptions(args.format, args.optionStrings);
  const optionValue = (name: string): string | undefined => given.get(name)?.value;
  const supports = (name: string): boolean => (formatOptions(args.format) ?? []).some((d) => d.name === name);
  let size = args.size;
  if (given.has('size')) {
    if (size !== undefined) throw new VdiskError('EINVAL', 'The image size must be specified only once', { field: 'size' });
    size = Number(optionValue('size'));
  }
  const record = (name: string, value: string, what: string): void => {
    if (!supports(name)) throw new VdiskError('ENOTSUP', `${what} not supported for file format '${args.format}'`, { field: name });
    given.set(name, { desc: { name, type: 'str', help: '' }, text: value, value });
  };
  if (args.backing !== undefined) record('backing_file', args.backing, 'Backing file');
  if (args.backingFormat !== undefined) record('backing_fmt', args.backingFormat, 'Backing file format');
  const backing = optionValue('backing_file');
  let backingFormat: FormatName | undefined;
  if (backing !== undefined) {
    if (backing === args.filename) {
      throw new VdiskError('EINVAL', 'Error: Trying to create an image with the same filename as the backing file', { file: args.filename });
    }
    const fmtText = optionValue('backing_fmt');
    if (fmtText !== undefined) {
      backingFormat = toFormatName(fmtText);
      if (backingFormat === undefined) throw new VdiskError('EINVAL', `Unknown backing file format '${fmtText}'`, { field: 'backing_fmt' });
    }
    if (fmtText === undefined && args.unsafe) {
      throw new VdiskError('EINVAL', 'Backing file specified without backing format', { field: 'backing_fmt' });
    }
    if (!args.unsafe || size === undefined) {
      const path = resolveBackingPath(args.filename, backing);
      let node;
      try {
        node = await ctx.engine.openImage(path, { ...(backingFormat ? { format: backingFormat } : {}), readOnly: true, noBacking: true, forceShare: true });
      } catch (e) {
        throw new VdiskError('ENOENT', `${openErrorText(path, e)}\nCould not open backing image.`, { file: path }, { cause: e });
      }
      try {
        if (fmtText === undefined) {
          throw new VdiskError('EINVAL', `Backing file specified without backing format\nDetected format of ${node.format}.`, { field: 'backing_fmt' });
        }
        size ??= node.length;
      } finally {
        await node.close();
      }
    }
  }
  if (size === undefined) throw new VdiskError('EINVAL', 'Image creation needs a size parameter', { field: 'size' });
  given.set('size', { desc: { name: 'size', type: 'size', help: '' }, text: String(size), value: String(size) });
  if (!args.quiet) ctx.out.stdout(`Formatting '${args.filename}', fmt=${args.format} ${formattingOptions(args.format, given)}\n`);
  const engineOptions: Record<string, string> = {};
  for (const [name, opt] of given) {
    if (name !== 'size' && name !== 'backing_file' && name !== 'backing_fmt') engineOptions[name] = opt.value;
  }
  await ctx.engine.createImage(args.filename, format, {
    size,
    options: engineOptions,
    ...(backing !== undefined ? { backingFile: backing } : {}),
    ...(backingFormat !== undefined ? { backingFormat } : {}),
  });
  for (const line of compatWarnings(args.format, engineOptions)) ctx.out.stderr(line);
}
