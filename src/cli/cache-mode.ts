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
