/**
 * The format-extension cluster (docs/interop/parallels.txt "Format Extension"):
 * u64 magic, MD5 of the cluster from byte 24, then features
 * {u64 magic, u64 flags, u32 data_size, u32 unused, data, pad to 8} ending with
 * an all-zero "end of features" entry. Pure codec plus the rule deciding what a
 * writer keeps.
 *
 * Rule (parallels.txt): a feature flagged NECESSARY that the software cannot
 * handle forbids changing the file; one flagged TRANSIT is kept as is; any other
 * is dropped. vdisk does not maintain dirty bitmaps, so a writer drops them
 * (their content goes stale with the first write, as libploop does).
 */
import { createHash } from 'node:crypto';

export const EXT_MAGIC = 0xab234cef23dcea87n;
export const DIRTY_BITMAP_MAGIC = 0x20385fae252cb34an;
export const FEATURE_NECESSARY = 1n;
export const FEATURE_TRANSIT = 2n;
const CHECKSUM_FROM = 24;

export interface ExtFeature {
  readonly magic: bigint;
  readonly flags: bigint;
  readonly data: Uint8Array;
}

export type ParsedExtension = { readonly ok: true; readonly features: ExtFeature[] } | { readonly ok: false; readonly reason: string };

function md5(bytes: Uint8Array): Uint8Array {
  return createHash('md5').update(bytes).digest();
}

/** Parses an extension cluster; never throws on garbage, reports why instead. */
export function parseExtension(cluster: Uint8Array): ParsedExtension {
  if (cluster.length < CHECKSUM_FROM) return { ok: false, reason: 'cluster too small' };
  const view = new DataView(cluster.buffer, cluster.byteOffset, cluster.byteLength);
  if (view.getBigUint64(0, true) !== EXT_MAGIC) return { ok: false, reason: 'bad magic' };
  const sum = md5(cluster.subarray(CHECKSUM_FROM));
  for (let i = 0; i < 16; i++) {
    if (sum[i] !== cluster[8 + i]) return { ok: false, reason: 'checksum mismatch' };
  }
  const features: ExtFeature[] = [];
  let pos = CHECKSUM_FROM;
  for (;;) {
    if (pos + 24 > cluster.length) return { ok: false, reason: 'features run past the cluster' };
    const magic = view.getBigUint64(pos, true);
    const flags = view.getBigUint64(pos + 8, true);
    const size = view.getUint32(pos + 16, true);
    if (magic === 0n) return { ok: true, features };
    const start = pos + 24;
    if (size > cluster.length - start) return { ok: false, reason: 'feature data runs past the cluster' };
    features.push({ magic, flags, data: cluster.slice(start, start + size) });
    pos = start + Math.ceil(size / 8) * 8;
  }
}

/** Encodes features into a cluster of `clusterSize` bytes, or null when they do not fit. */
export function encodeExtension(features: readonly ExtFeature[], clusterSize: number): Uint8Array | null {
  const need = CHECKSUM_FROM + features.reduce((n, f) => n + 24 + Math.ceil(f.data.length / 8) * 8, 0) + 24;
  if (need > clusterSize) return null;
  const out = new Uint8Array(clusterSize);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, EXT_MAGIC, true);
  let pos = CHECKSUM_FROM;
  for (const f of features) {
    view.setBigUint64(pos, f.magic, true);
    view.setBigUint64(pos + 8, f.flags, true);
    view.setUint32(pos + 16, f.data.length, true);
    out.set(f.data, pos + 24);
    pos += 24 + Math.ceil(f.data.length / 8) * 8;
  }
  out.set(md5(out.subarray(CHECKSUM_FROM)), 8);
  return out;
}

/** What a writer does with an extension: keep some features, drop all, or refuse to write. */
export type ExtensionPlan =
  | { readonly action: 'drop' }
  | { readonly action: 'keep'; readonly features: ExtFeature[]; readonly changed: boolean }
  | { readonly action: 'refuse'; readonly magic: bigint };

/** Applies the NECESSARY / TRANSIT rule for a writer that does not maintain any feature. */
export function planForWriter(parsed: ParsedExtension): ExtensionPlan {
  // An unreadable extension cannot be kept consistent; its flags are unknown, so drop it.
  if (!parsed.ok) return { action: 'drop' };
  const kept: ExtFeature[] = [];
  for (const f of parsed.features) {
    const known = f.magic === DIRTY_BITMAP_MAGIC;
    if (!known && (f.flags & FEATURE_NECESSARY) !== 0n) return { action: 'refuse', magic: f.magic };
    if (!known && (f.flags & FEATURE_TRANSIT) !== 0n) kept.push(f);
  }
  if (kept.length === 0) return { action: 'drop' };
  return { action: 'keep', features: kept, changed: kept.length !== parsed.features.length };
}
