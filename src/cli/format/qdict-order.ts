import type { JsonValue } from '../../formats/driver.js';

/**
 * QEMU prints a QDict's keys in its hash-table order, not insertion order: 512
 * buckets chosen by tdb_hash, each bucket a list with the newest key first
 * (qobject/qdict.c). qemu-img check's and measure's JSON come out in that
 * order, so to print them byte for byte we sort the same way.
 */
const QDICT_BUCKETS = 512;

/** qdict.c tdb_hash(name) % QDICT_BUCKET_MAX, in 32-bit unsigned arithmetic. */
export function qdictBucket(name: string): number {
  const bytes = Buffer.from(name, 'utf8');
  let value = Math.imul(0x238f13af, bytes.length) >>> 0;
  for (let i = 0; i < bytes.length; i++) {
    value = (value + (((bytes[i] ?? 0) << ((i * 5) % 24)) >>> 0)) >>> 0;
  }
  return ((Math.imul(1103515243, value) + 12345) >>> 0) % QDICT_BUCKETS;
}

/** The entries of `obj` (given in the order QEMU's visitor inserts them) in QDict iteration order. */
export function qdictOrdered(obj: { readonly [key: string]: JsonValue }): { [key: string]: JsonValue } {
  const keys = Object.keys(obj).map((key, inserted) => ({ key, inserted, bucket: qdictBucket(key) }));
  // Lower bucket first; within a bucket the later insertion is at the list head.
  keys.sort((a, b) => a.bucket - b.bucket || b.inserted - a.inserted);
  const out: { [key: string]: JsonValue } = {};
  for (const { key } of keys) out[key] = obj[key] ?? null;
  return out;
}
