/**
 * The generic block options of an --image-opts string or a qemu-io `-o`
 * list, turned into how the engine opens the image: read-only, force-share,
 * cache.direct / cache.no-flush (combined with -t / -T, the string winning as
 * in QEMU), backing="" (no backing file) and qcow2's runtime options.
 *
 * Accepted and not applied, because they change nothing vdisk does:
 * auto-read-only, discard, detect-zeroes, node-name, and qcow2's
 * cache-clean-interval, pass-discard-* and overlap-check*. Everything else
 * that a format does not take is refused after the open (driver-options.ts).
 */
import type { CacheMode } from '../formats/driver.js';
import { cacheFlags, cacheModeOf } from '../formats/cache-mode.js';
import type { ProtocolOptions } from './image-opts.js';
import { type EngineOpenOptions, QCOW2_TUNING_KEYS, onOffValue } from './qcow2-tuning.js';
import type { DriverOptions } from './qemu-io/driver-options.js';

/** What the command asks of the open, before the option string has its say. */
export interface OpenRequest {
  /** The command only reads (the string may make a writing command fail, never a reading one write). */
  readonly readOnly: boolean;
  /** -t / -T; undefined: the engine's default (writeback). */
  readonly cache?: CacheMode | undefined;
  /** -U */
  readonly forceShare?: boolean | undefined;
}

export type OpenSettings = Pick<EngineOpenOptions, 'readOnly' | 'cache' | 'forceShare' | 'noBacking' | 'qcow2Options'>;

export type SettingsResult =
  | { readonly ok: true; readonly settings: OpenSettings; readonly warnings: readonly string[] }
  | { readonly ok: false; readonly message: string };

function switchValue(values: ReadonlyMap<string, string>, key: string, text: string | undefined = values.get(key)): boolean | undefined {
  return text === undefined ? undefined : onOffValue(key, text);
}

/** The cache mode after the string's cache.direct / cache.no-flush (file.cache.* nearest the file wins). */
function cacheMode(values: ReadonlyMap<string, string>, protocol: ProtocolOptions, base: CacheMode | undefined): CacheMode | undefined {
  const direct = switchValue(values, 'cache.direct', protocol.cacheDirect) ?? switchValue(values, 'cache.direct');
  const formatNoFlush = switchValue(values, 'cache.no-flush');
  const noFlush = formatNoFlush === true ? true : (switchValue(values, 'cache.no-flush', protocol.cacheNoFlush) ?? formatNoFlush);
  if (direct === undefined && noFlush === undefined) return base;
  const from = cacheFlags(base);
  return cacheModeOf({ direct: direct ?? from.direct, noFlush: noFlush ?? from.noFlush, writethrough: from.writethrough });
}

/** Works out the open from the string's generic options; the message is QEMU's, or says what vdisk cannot do. */
export function openSettings(options: DriverOptions, protocol: ProtocolOptions, request: OpenRequest): SettingsResult {
  const { values } = options;
  try {
    const readOnlyOption = switchValue(values, 'read-only');
    const forceShareOption = switchValue(values, 'force-share');
    if (readOnlyOption === true && !request.readOnly) return { ok: false, message: 'Block node is read-only' };
    const forceShare = forceShareOption ?? request.forceShare ?? false;
    if (forceShare && !request.readOnly) return { ok: false, message: 'force-share=on can only be used with read-only images' };
    const cache = cacheMode(values, protocol, request.cache);
    const warnings: string[] = [];
    const backing = values.get('backing');
    if (backing === '') warnings.push('warning: Use of "backing": "" is deprecated; use "backing": null instead');
    const qcow2Options = new Map([...values].filter(([key]) => QCOW2_TUNING_KEYS.includes(key)));
    const settings: OpenSettings = {
      readOnly: request.readOnly,
      forceShare,
      ...(cache !== undefined ? { cache } : {}),
      ...(backing === '' ? { noBacking: true } : {}),
      ...(qcow2Options.size > 0 ? { qcow2Options } : {}),
    };
    return { ok: true, settings, warnings };
  } catch (e) {
    return { ok: false, message: e instanceof Error ? e.message : String(e) };
  }
}
