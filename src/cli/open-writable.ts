import type { ImageNode, OpenOptions } from '../block/types.js';
import type { FormatName } from '../formats/driver.js';
import { type CliContext, reportError } from './context.js';
import { toFormatName } from './commands/create.js';
import { openErrorText } from './open-error.js';

/** QEMU's raw_open warning when a writable image was probed as raw (block/raw-format.c). */
export function rawProbeWarning(file: string): string {
  return (
    `WARNING: Image format was not specified for '${file}' and probing guessed raw.\n` +
    '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
    "         Specify the 'raw' format explicitly to remove the restrictions.\n"
  );
}

/** Opens an image read-write for a modifying command; reports qemu-img's "Could not open" on failure. */
export async function openForWriting(
  ctx: CliContext,
  path: string,
  options: { readonly format: string | undefined } & Omit<OpenOptions, 'format' | 'readOnly'>,
): Promise<ImageNode | undefined> {
  const { format: formatText, ...rest } = options;
  let format: FormatName | undefined;
  if (formatText !== undefined) {
    format = toFormatName(formatText);
    if (format === undefined) {
      reportError(ctx, `Could not open '${path}': Unknown driver '${formatText}'`);
      return undefined;
    }
  }
  try {
    const node = await ctx.engine.openImage(path, { ...rest, ...(format ? { format } : {}), readOnly: false, onWarning: (message) => reportError(ctx, message) });
    if (format === undefined && node.format === 'raw') ctx.out.stderr(rawProbeWarning(path));
    return node;
  } catch (e) {
    reportError(ctx, `Could not open '${path}': ${openErrorText(path, e)}`);
    return undefined;
  }
}
