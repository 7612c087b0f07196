/** Creating an image file of a given format. */
import type { FormatName } from '../formats/driver.js';
import { formatByName } from '../formats/registry.js';
import type { CreateOptions } from '../formats/registry-types.js';

/**
 * Creates `path` as an image of `format` (raw, qcow2, ploop; 'parallels' is
 * accepted for ploop), dispatching to the format's module.
 *
 * @example
 * ```ts
 * import { createImage } from 'vdisk';
 * await createImage('disk.raw', 'raw', { size: 1 << 20, options: {} });
 * ```
 */
export async function createImage(path: string, format: FormatName | 'parallels', options: CreateOptions): Promise<void> {
  await formatByName(format).create(path, options);
}
