/**
 * Warnings for `create` and `convert` when a creation option makes the image
 * unreadable by older QEMU releases. The releases are those that first accept
 * the feature (qapi/block-core.json: extended-l2 "since 5.2", compression-type
 * "since 5.1"). One line each, on stderr; stdout stays what qemu-img prints.
 */
import { PROGRAM } from './context.js';

interface CompatRule {
  readonly option: string;
  /** Option values (as normalised by create-options: bools are on/off) that trigger the warning. */
  readonly values: readonly string[];
  readonly text: string;
}

const RULES: readonly CompatRule[] = [
  {
    option: 'extended_l2',
    values: ['on'],
    text: 'images with extended L2 entries need QEMU 5.2 or later',
  },
  {
    option: 'compression_type',
    values: ['zstd'],
    text: 'zstd-compressed images need QEMU 5.1 or later',
  },
];

/** The warning lines (each ending in a newline) for the given qcow2 creation options. */
export function compatWarnings(format: string, options: Readonly<Record<string, string>>): string[] {
  if (format !== 'qcow2') return [];
  const lines: string[] = [];
  for (const rule of RULES) {
    const value = options[rule.option];
    if (value !== undefined && rule.values.includes(value)) {
      lines.push(`${PROGRAM}: warning: ${rule.option}=${value}: ${rule.text}\n`);
    }
  }
  return lines;
}
