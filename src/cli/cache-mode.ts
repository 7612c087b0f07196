import type { CacheMode } from '../formats/driver.js';

/**
 * A cache mode as qemu's -t/-T spell it (bdrv_parse_cache_mode): "off" is an
 * old name of "none". Undefined for anything else.
 */
export function parseCacheMode(text: string): CacheMode | undefined {
  switch (text) {
    case 'off':
    case 'none':
      return 'none';
    case 'writeback':
    case 'unsafe':
    case 'directsync':
    case 'writethrough':
      return text;
    default:
      return undefined;
  }
}

/** A -t / -T value checked: the mode (undefined when the option was not given), or qemu-img's error. */
export type CacheOption = { readonly ok: true; readonly mode: CacheMode | undefined } | { readonly ok: false; readonly message: string };

/**
 * Checks the value of -t (`which` = 'cache', the image the command changes)
 * or -T ('source', the images it only reads), with qemu-img's messages.
 *
 * @example
 * cacheOption('none', 'cache'); // { ok: true, mode: 'none' }
 * cacheOption('bogus', 'source'); // { ok: false, message: 'Invalid source cache option: bogus' }
 */
export function cacheOption(text: string | undefined, which: 'cache' | 'source'): CacheOption {
  if (text === undefined) return { ok: true, mode: undefined };
  const mode = parseCacheMode(text);
  if (mode !== undefined) return { ok: true, mode };
  return { ok: false, message: `Invalid ${which === 'source' ? 'source cache' : 'cache'} option: ${text}` };
}
