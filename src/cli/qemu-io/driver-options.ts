/**
 * The `-o` list of qemu-io's open (and reopen): QemuOpts syntax, where a
 * comma separates options, ",," is a literal comma, the last of a repeated
 * key wins, and a bare `key` (or `nokey`) is a deprecated short-form boolean
 * that draws a warning.
 */
import { splitOptionItems } from '../create-options.js';

export interface DriverOptions {
  /** The options in the order first given, each with its last value. */
  readonly values: ReadonlyMap<string, string>;
  /** Warnings to print (without the program name), in order. */
  readonly warnings: readonly string[];
}

/**
 * Parses every -o argument given, in order. With `impliedKey`, a first item
 * without '=' is that key's value (qemu-img's --image-opts implies `file`).
 */
export function parseDriverOptions(args: readonly string[], impliedKey?: string): DriverOptions {
  const values = new Map<string, string>();
  const warnings: string[] = [];
  for (const arg of args) {
    for (const item of splitOptionItems(arg)) {
      const eq = item.indexOf('=');
      if (eq >= 0) {
        values.set(item.slice(0, eq), item.slice(eq + 1));
        continue;
      }
      if (impliedKey !== undefined && values.size === 0) {
        values.set(impliedKey, item);
        continue;
      }
      const off = item.startsWith('no');
      const key = off ? item.slice(2) : item;
      warnings.push(`warning: short-form boolean option '${item}' deprecated\nPlease use ${key}=${off ? 'off' : 'on'} instead`);
      values.set(key, off ? 'off' : 'on');
    }
  }
  return { values, warnings };
}

/** Options every block node takes; vdisk honours read-only, force-share and cache.direct and accepts the rest. */
const GENERIC_KEYS: readonly string[] = [
  'driver', 'read-only', 'force-share', 'auto-read-only', 'cache.direct', 'cache.no-flush', 'discard', 'detect-zeroes', 'node-name',
];

/** qcow2's runtime options: caches, discard passing and overlap checks change how it works, not what it stores. */
const QCOW2_KEYS: readonly string[] = [
  'lazy-refcounts', 'cache-size', 'l2-cache-size', 'l2-cache-entry-size', 'refcount-cache-size', 'cache-clean-interval',
  'pass-discard-request', 'pass-discard-snapshot', 'pass-discard-other', 'overlap-check',
];

/** The first option that the opened image's format does not take ("Block format 'raw' does not support the option 'x'"). */
export function unsupportedOption(options: DriverOptions, format: string): string | undefined {
  for (const key of options.values.keys()) {
    if (GENERIC_KEYS.includes(key)) continue;
    // backing="" (no backing file) is every format's; another value names a node, which vdisk has none of.
    if (key === 'backing' && options.values.get(key) === '') continue;
    if (format === 'qcow2' && (QCOW2_KEYS.includes(key) || key.startsWith('overlap-check.'))) continue;
    return key;
  }
  return undefined;
}

/** on/off as QEMU's boolean options spell them; undefined when absent. */
export function booleanOption(options: DriverOptions, key: string): boolean | undefined {
  const v = options.values.get(key);
  if (v === undefined) return undefined;
  return v === 'on' || v === 'yes' || v === 'true' || v === 'y';
}
