/**
 * Opening a qemu-img command's image operand: a path with an optional -f, or
 * under --image-opts an option string (image-opts.ts) whose generic options
 * (open-settings.ts) and qcow2 options (qcow2-tuning.ts) are applied and
 * whose other options must be ones the opened format takes.
 */
import type { ImageNode } from '../block/types.js';
import { VdiskError } from '../errors.js';
import type { FormatName } from '../formats/driver.js';
import { toFormatName } from './commands/create.js';
import { type CliContext, reportError } from './context.js';
import { qemuFormatName } from './format-name.js';
import { parseImageOptions } from './image-opts.js';
import { openErrorText } from './open-error.js';
import { type OpenRequest, openSettings } from './open-settings.js';
import type { EngineOpenOptions } from './qcow2-tuning.js';
import { type DriverOptions, unsupportedOption } from './qemu-io/driver-options.js';

export interface OperandRequest extends OpenRequest {
  /** -f as typed (refused together with --image-opts, as qemu-img's img_open does). */
  readonly format: string | undefined;
  /** --image-opts (or --target-image-opts for a target). */
  readonly imageOpts: boolean;
  readonly noBacking?: boolean;
  readonly noRepair?: boolean;
  readonly inlineIo?: boolean;
}

/**
 * The opened image, or qemu-img's whole error message (without the program
 * name) and its reason alone (what follows "Could not open '<operand>': ",
 * for tools that put another prefix before it).
 */
export type OperandOpened =
  | { readonly ok: true; readonly node: ImageNode; readonly filename: string }
  | { readonly ok: false; readonly message: string; readonly reason: string };

/** The first option the opened image's format does not take, as QEMU's error; undefined when it takes them all. */
function checkFormatOptions(options: DriverOptions, node: ImageNode): VdiskError | undefined {
  const key = unsupportedOption(options, node.format);
  if (key === undefined) return undefined;
  return new VdiskError('EINVAL', `Block format '${qemuFormatName(node.format)}' does not support the option '${key}'`, { file: node.filename, field: key });
}

/** The raw-probe warning of a writable open (block/raw-format.c). */
export function rawProbeWarning(file: string): string {
  return (
    `WARNING: Image format was not specified for '${file}' and probing guessed raw.\n` +
    '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
    "         Specify the 'raw' format explicitly to remove the restrictions.\n"
  );
}

/**
 * Opens the image `operand` names for a command; warnings go to stderr as
 * they arise, the error (if any) is returned for the command to report.
 */
export async function openOperand(ctx: CliContext, operand: string, request: OperandRequest): Promise<OperandOpened> {
  const fail = (reason: string): OperandOpened => ({ ok: false, message: `Could not open '${operand}': ${reason}`, reason });
  const refuse = (message: string): OperandOpened => ({ ok: false, message, reason: message });
  let filename = operand;
  let format: FormatName | undefined;
  let options: EngineOpenOptions;
  let formatOptions: DriverOptions | undefined;
  if (request.imageOpts) {
    if (request.format !== undefined) return refuse('--image-opts and --format are mutually exclusive');
    const parsed = parseImageOptions(operand, { impliedFile: true });
    for (const w of parsed.warnings) reportError(ctx, w);
    if (!parsed.ok) return fail(parsed.message);
    if (request.forceShare === true && parsed.options.values.has('force-share') && parsed.options.values.get('force-share') !== 'on') {
      return refuse('--force-share/-U conflicts with image options');
    }
    const settings = openSettings(parsed.options, parsed.protocol, request);
    if (!settings.ok) return fail(settings.message);
    for (const w of settings.warnings) reportError(ctx, w);
    filename = parsed.filename;
    format = parsed.format;
    formatOptions = parsed.options;
    options = { ...settings.settings, ...(request.noBacking ? { noBacking: true } : {}) };
  } else {
    if (request.format !== undefined) {
      format = toFormatName(request.format);
      if (format === undefined) return fail(`Unknown driver '${request.format}'`);
    }
    options = {
      readOnly: request.readOnly,
      ...(request.forceShare !== undefined ? { forceShare: request.forceShare } : {}),
      ...(request.cache !== undefined ? { cache: request.cache } : {}),
      ...(request.noBacking ? { noBacking: true } : {}),
    };
  }
  let node: ImageNode;
  try {
    node = await ctx.engine.openImage(filename, {
      ...options,
      ...(format ? { format } : {}),
      ...(request.noRepair ? { noRepair: true } : {}),
      ...(request.inlineIo ? { inlineIo: true } : {}),
      onWarning: (message) => reportError(ctx, message),
    });
  } catch (e) {
    return fail(openErrorText(filename, e));
  }
  const refused = formatOptions ? checkFormatOptions(formatOptions, node) : undefined;
  if (refused) {
    await node.close().catch(() => undefined);
    return fail(refused.message);
  }
  if (!request.readOnly && format === undefined && node.format === 'raw') ctx.out.stderr(rawProbeWarning(filename));
  return { ok: true, node, filename };
}

/** openOperand for commands that only report its error: the node, or undefined once the error is printed. */
export async function openOperandOrReport(ctx: CliContext, operand: string, request: OperandRequest): Promise<ImageNode | undefined> {
  const opened = await openOperand(ctx, operand, request);
  if (opened.ok) return opened.node;
  reportError(ctx, opened.message);
  return undefined;
}
