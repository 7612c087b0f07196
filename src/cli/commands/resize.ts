/**
 * `vdisk resize`: qemu-img resize (qemu-img.c img_resize). The size is the
 * last argument and is taken off before option parsing, so "-1G" is a size,
 * not an option; a leading + or - makes it relative.
 */
import { type CliContext, reportError, reportUsage } from '../context.js';
import { describeError } from '../errors-text.js';
import { parseQemuSize } from '../create-options.js';
import { getopt } from '../getopt.js';
import { openForWriting } from '../open-writable.js';

const PREALLOCATION_MODES = ['off', 'metadata', 'falloc', 'full'] as const;

export const SIZE_PARAMETER_TEXT =
  "Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.";

/** `vdisk resize [-f fmt] [--preallocation=mode] [--shrink] [-q] filename [+|-]size` */
export async function resizeCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  if (argv.length < 2) return reportUsage(ctx, 'Not enough arguments');
  const sizeText = argv[argv.length - 1] ?? '';
  const parsed = getopt(argv.slice(0, -1), {
    shortOptions: 'f:hq',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'preallocation', hasArg: true, key: 'preallocation' },
      { name: 'shrink', hasArg: false, key: 'shrink' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  let format: string | undefined;
  let quiet = false;
  let shrink = false;
  let preallocation = 'off';
  let imageOpts = false;
  for (const { key, value = '' } of parsed.options) {
    if (key === 'f') format = value;
    else if (key === 'image-opts') imageOpts = true;
    else if (key === 'q') quiet = true;
    else if (key === 'shrink') shrink = true;
    else if (key === 'h') return reportUsage(ctx, 'see qemu-img(1) for the resize options');
    else if (key === 'preallocation') {
      if (!(PREALLOCATION_MODES as readonly string[]).includes(value)) {
        reportError(ctx, `Invalid preallocation mode '${value}'`);
        return 1;
      }
      preallocation = value;
    }
  }
  if (parsed.operands.length !== 1) return reportUsage(ctx, 'Expecting image file name and size');
  const filename = parsed.operands[0] ?? '';
  const relative = sizeText.startsWith('+') ? 1 : sizeText.startsWith('-') ? -1 : 0;
  const amount = parseQemuSize(relative === 0 ? sizeText : sizeText.slice(1));
  if (amount === undefined || amount >= 2 ** 64) {
    reportError(ctx, SIZE_PARAMETER_TEXT);
    return 1;
  }
  const node = await openForWriting(ctx, filename, { format, imageOpts });
  if (!node) return 1;
  try {
    const current = node.length;
    const total = relative === 0 ? amount : current + relative * amount;
    if (total <= 0) {
      reportError(ctx, 'New image size must be positive');
      return 1;
    }
    if (total <= current && preallocation !== 'off') {
      reportError(ctx, 'Preallocation can only be used for growing images');
      return 1;
    }
    if (total < current && !shrink) {
      reportError(ctx, 'Use the --shrink option to perform a shrink operation.');
      reportError(
        ctx,
        "warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.",
      );
      return 1;
    }
    if (!Number.isSafeInteger(total)) {
      reportError(ctx, `Image size ${total} is too large`);
      return 1;
    }
    try {
      await node.resize(total, { shrink, preallocation });
      await node.flush();
    } catch (e) {
      reportError(ctx, describeError(e));
      return 1;
    }
    if (!quiet) ctx.out.stdout('Image resized.\n');
    return 0;
  } finally {
    await node.close().catch(() => undefined);
  }
}
