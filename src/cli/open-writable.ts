import type { ImageNode } from '../block/types.js';
import type { CacheMode } from '../formats/driver.js';
import type { CliContext } from './context.js';
import { openOperandOrReport } from './image-operand.js';

/**
 * Opens an image read-write for a modifying command (a path with -f, or an
 * --image-opts string); reports qemu-img's "Could not open" on failure.
 */
export function openForWriting(
  ctx: CliContext,
  operand: string,
  options: { readonly format: string | undefined; readonly imageOpts?: boolean; readonly cache?: CacheMode; readonly noBacking?: boolean },
): Promise<ImageNode | undefined> {
  return openOperandOrReport(ctx, operand, { ...options, imageOpts: options.imageOpts === true, readOnly: false });
}
