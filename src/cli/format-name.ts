import type { FormatName } from '../formats/driver.js';

/** The name qemu-img prints for a format: QEMU calls ploop images "parallels". */
export function qemuFormatName(format: FormatName): string {
  return format === 'ploop' ? 'parallels' : format;
}
