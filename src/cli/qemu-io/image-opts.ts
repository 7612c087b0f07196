/**
 * qemu-io --image-opts: the file operand is an option string
 * ("driver=qcow2,file.filename=disk.qcow2") instead of a file name. vdisk
 * reads its images through the host file, so file.driver can only be "file".
 */
import { toFormatName } from '../commands/create.js';
import type { FormatName } from '../../formats/driver.js';
import { type DriverOptions, parseDriverOptions } from './driver-options.js';

export type ImageOptsResult =
  | { readonly ok: true; readonly filename: string; readonly format: FormatName | undefined; readonly options: DriverOptions; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly message: string; readonly warnings: readonly string[] };

/** Parses the option string; `message` is what follows "can't open: " when it names no image vdisk can open. */
export function parseImageOpts(text: string): ImageOptsResult {
  const parsed = parseDriverOptions([text]);
  const { values, warnings } = parsed;
  const driver = values.get('driver');
  const filename = values.get('file.filename');
  const fail = (message: string): ImageOptsResult => ({ ok: false, message, warnings });
  if (driver === undefined && filename === undefined && !values.has('file')) return fail('Must specify either driver or file');
  if (filename === undefined) return fail('A block device must be specified for "file"');
  const fileDriver = values.get('file.driver');
  if (fileDriver !== undefined && fileDriver !== 'file') return fail(`Unknown protocol driver '${fileDriver}' for vdisk`);
  const format = driver === undefined ? undefined : toFormatName(driver);
  if (driver !== undefined && format === undefined) return fail(`Unknown driver '${driver}'`);
  // The file.* options belong to the protocol layer; what is left is checked against the format.
  const rest = new Map([...values].filter(([key]) => key !== 'file' && !key.startsWith('file.')));
  return { ok: true, filename, format, options: { values: rest, warnings: [] }, warnings };
}
