import { isVdiskError } from '../errors.js';
import { describeError } from './errors-text.js';
import { QCOW2_TUNING_KEYS } from './qcow2-tuning.js';

/**
 * "Could not open 'f': reason", unless the engine's message already says which
 * file it could not open.
 */
export function openErrorText(path: string, e: unknown): string {
  // An image lock conflict reads as QEMU's: "Failed to get ... lock\nIs another process using the image [f]?"
  if (isVdiskError(e) && e.context.field === 'lock') return e.message;
  // A qcow2 runtime option refused (qcow2-tuning.ts): QEMU names the option, not the file.
  if (isVdiskError(e) && e.context.field !== undefined && QCOW2_TUNING_KEYS.includes(e.context.field)) return e.message;
  // qcow2_open's text; the engine's names the magic it found, which QEMU does not print.
  if (isVdiskError(e) && e.context.field === 'magic' && /not in qcow2 format/.test(e.message)) {
    return `Image is not in qcow2 format`;
  }
  const text = describeError(e);
  if (/^(Could not|Cannot) open '/.test(text)) return text;
  return `Could not open '${path}': ${text}`;
}
