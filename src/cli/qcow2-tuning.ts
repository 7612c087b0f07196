/**
 * qcow2's runtime options as qemu-img and qemu-io take them (l2-cache-size,
 * refcount-cache-size, cache-size, l2-cache-entry-size, lazy-refcounts):
 * parsed here from the option string's values, then handed to the block
 * layer for the top image, whose qcow2 driver checks them against its header
 * and sizes its caches (formats/qcow2/runtime-options.ts). Values are
 * QEMU's to judge only for a qcow2 image: a raw image refuses these options
 * by name instead (image-operand.ts), whatever their values.
 */
import { openImage, type ImageNode, type OpenOptions } from '../block/index.js';
import { VdiskError } from '../errors.js';
import type { Qcow2Tuning } from '../formats/registry-types.js';
import { parseQemuSize } from './create-options.js';

/** The qcow2 options handled here, by QEMU's names. */
export const QCOW2_TUNING_KEYS: readonly string[] = ['l2-cache-size', 'refcount-cache-size', 'cache-size', 'l2-cache-entry-size', 'lazy-refcounts'];

/** The open options the CLI gives its engine: the block layer's, plus qcow2 tuning by QEMU's option names. */
export type EngineOpenOptions = OpenOptions & {
  /** Runtime options for the top image if it is qcow2 (keys of QCOW2_TUNING_KEYS), values as typed. */
  readonly qcow2Options?: ReadonlyMap<string, string>;
};

function optionError(file: string, field: string, message: string): VdiskError {
  return new VdiskError('EINVAL', message, { file, field });
}

function sizeValue(file: string, options: ReadonlyMap<string, string>, key: string): number | undefined {
  const text = options.get(key);
  if (text === undefined) return undefined;
  const n = parseQemuSize(text);
  if (n === undefined || !Number.isSafeInteger(n)) {
    throw optionError(
      file,
      key,
      `Parameter '${key}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`,
    );
  }
  return n;
}

/** QEMU's on/off parameter: the four spellings of each, anything else refused. */
export function onOffValue(key: string, text: string, file?: string): boolean {
  if (['on', 'yes', 'true', 'y'].includes(text)) return true;
  if (['off', 'no', 'false', 'n'].includes(text)) return false;
  throw new VdiskError('EINVAL', `Parameter '${key}' expects 'on' or 'off'`, { ...(file !== undefined ? { file } : {}), field: key });
}

/** Parses the options and applies the checks that need nothing of the image. */
export function parseTuning(file: string, options: ReadonlyMap<string, string>): Qcow2Tuning {
  const l2CacheSize = sizeValue(file, options, 'l2-cache-size');
  const refcountCacheSize = sizeValue(file, options, 'refcount-cache-size');
  const cacheSize = sizeValue(file, options, 'cache-size');
  const l2CacheEntrySize = sizeValue(file, options, 'l2-cache-entry-size');
  const lazyText = options.get('lazy-refcounts');
  const lazyRefcounts = lazyText === undefined ? undefined : onOffValue('lazy-refcounts', lazyText, file);
  if (cacheSize !== undefined) {
    if (l2CacheSize !== undefined && refcountCacheSize !== undefined) {
      throw optionError(file, 'cache-size', 'cache-size, l2-cache-size and refcount-cache-size may not be set at the same time');
    }
    if (l2CacheSize !== undefined && l2CacheSize > cacheSize) throw optionError(file, 'l2-cache-size', 'l2-cache-size may not exceed cache-size');
    if (refcountCacheSize !== undefined && refcountCacheSize > cacheSize) {
      throw optionError(file, 'refcount-cache-size', 'refcount-cache-size may not exceed cache-size');
    }
  }
  return {
    ...(l2CacheSize !== undefined ? { l2CacheSize } : {}),
    ...(refcountCacheSize !== undefined ? { refcountCacheSize } : {}),
    ...(cacheSize !== undefined ? { cacheSize } : {}),
    ...(l2CacheEntrySize !== undefined ? { l2CacheEntrySize } : {}),
    ...(lazyRefcounts !== undefined ? { lazyRefcounts } : {}),
  };
}

/**
 * The engine's open: the block layer's, with qcow2 runtime options given to
 * the top image. Options whose values do not parse fail the open only when
 * the image is qcow2 (QEMU judges them there); another format opens, and
 * the caller refuses the options by name.
 */
export async function openTuned(path: string, options: EngineOpenOptions): Promise<ImageNode> {
  const { qcow2Options, ...rest } = options;
  if (qcow2Options === undefined || qcow2Options.size === 0) return openImage(path, rest);
  let tuning: Qcow2Tuning;
  try {
    tuning = parseTuning(path, qcow2Options);
  } catch (e) {
    const node = await openImage(path, rest);
    if (node.format !== 'qcow2') return node;
    await node.close();
    throw e;
  }
  return openImage(path, { ...rest, qcow2Tuning: tuning });
}
