import { parseQemuSize } from '../create-options.js';

/** qemu-io's cvtnum: a byte count with an optional suffix; a negative errno name on failure. */
export function cvtnum(text: string): number | 'EINVAL' | 'ERANGE' {
  const n = parseQemuSize(text);
  if (n === undefined) return 'EINVAL';
  if (n > Number.MAX_SAFE_INTEGER) return 'ERANGE';
  return n;
}

/** print_cvtnum_err: printed on stdout, as qemu-io does. */
export function cvtnumErrorText(error: 'EINVAL' | 'ERANGE', arg: string): string {
  if (error === 'ERANGE') return `Parsing error: argument too large -- ${arg}\n`;
  return `Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- ${arg}\n`;
}

/** parse_pattern: strtol(arg, 0) that fits in a byte; C's base-0 rules (0x hex, leading 0 octal). */
export function parsePattern(text: string): number | undefined {
  let n: number;
  if (/^[+-]?0x[0-9a-f]+$/i.test(text)) n = Number.parseInt(text, 16);
  else if (/^[+-]?0[0-7]*$/.test(text)) n = Number.parseInt(text, 8);
  else if (/^[+-]?[1-9][0-9]*$/.test(text)) n = Number.parseInt(text, 10);
  else return undefined;
  if (!Number.isInteger(n) || n < 0 || n > 255) return undefined;
  return n;
}

/** Largest request qemu-io accepts (BDRV_REQUEST_MAX_BYTES). */
export const REQUEST_MAX_BYTES = 0x7ffffe00;
