import type { DirtyBitmap } from '../../block/dirty-bitmap.js';
import { META_DIRTY_BITMAP_PREFIX } from '../protocol/constants.js';

export interface MetaContext {
  readonly id: number;
  readonly name: string;
  /** For `qemu:dirty-bitmap:*` contexts: the bitmap whose bits are reported. */
  readonly bitmap?: DirtyBitmap;
}

/**
 * Which offered contexts answer a LIST query set: no queries lists all; a
 * namespace query ("base:", "qemu:", "qemu:dirty-bitmap:") lists that namespace; otherwise exact
 * names. Unknown queries select nothing (proto.md: ignore them silently).
 */
export function matchListQueries(offered: readonly MetaContext[], queries: readonly string[]): MetaContext[] {
  if (queries.length === 0) return [...offered];
  const out: MetaContext[] = [];
  for (const c of offered) {
    const ns = c.name.slice(0, c.name.indexOf(':') + 1);
    // qemu also answers "qemu:dirty-bitmap:" with every bitmap it exports.
    const bitmapNs = c.name.startsWith(META_DIRTY_BITMAP_PREFIX) ? META_DIRTY_BITMAP_PREFIX : null;
    if (queries.some((q) => q === c.name || q === ns || q === bitmapNs)) out.push(c);
  }
  return out;
}

/** Which offered contexts a SET query set selects: exact names only, each once. */
export function matchSetQueries(offered: readonly MetaContext[], queries: readonly string[]): MetaContext[] {
  return offered.filter((c) => queries.includes(c.name));
}
