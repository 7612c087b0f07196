/**
 * Model test of the qcow2 engine under concurrency: fast-check generates
 * batches of writes, zeroes, discards, reads and flushes at any byte offset;
 * the operations of a batch run concurrently (mutations on disjoint ranges,
 * so the result is defined) against an in-memory model disk. After every
 * batch the whole disk reads as the model; at the end the image checks clean
 * (vdisk's check) and reopens with the same content.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryHostFile } from '../crash/memory-host.js';
import { checkBytes, freshImageBytes, openOnHost } from '../crash/image-helpers.js';
import type { Qcow2Driver } from '../../src/formats/qcow2/qcow2-driver.js';

type Op =
  | { readonly kind: 'write'; readonly offset: number; readonly length: number; readonly seq: boolean; readonly fill: number }
  | { readonly kind: 'zero'; readonly offset: number; readonly length: number; readonly unmap: boolean }
  | { readonly kind: 'discard'; readonly offset: number; readonly length: number }
  | { readonly kind: 'read'; readonly offset: number; readonly length: number }
  | { readonly kind: 'flush' };

interface Setup {
  readonly name: string;
  readonly size: number;
  readonly clusterSize: number;
  readonly options: Record<string, string>;
  readonly l2CacheSize?: number;
  /** Share of VDISK_MODEL_RUNS (default 40) this setup runs. */
  readonly weight: number;
}

function opArb(s: Setup): fc.Arbitrary<Op> {
  const offset = fc.integer({ min: 0, max: s.size - 1 });
  const length = fc.integer({ min: 1, max: 3 * s.clusterSize });
  return fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('write' as const), offset, length, seq: fc.boolean(), fill: fc.integer({ min: 1, max: 255 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), offset, length, unmap: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('discard' as const), offset, length }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('read' as const), offset, length }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  );
}

function patternFor(op: { offset: number; fill: number }, length: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = (op.fill + ((op.offset + i) >> 9) * 3 + i) & 0xff || 1;
  return b;
}

async function runBatches(s: Setup, base: Uint8Array, batches: Op[][]): Promise<void> {
  const host = new MemoryHostFile('model.qcow2', base);
  const opened: Qcow2Driver = await openOnHost(host, {
    readOnly: false,
    ...(s.l2CacheSize !== undefined ? { l2CacheSize: s.l2CacheSize, refcountCacheSize: s.l2CacheSize } : {}),
  });
  let d: Qcow2Driver | null = opened;
  const model = new Uint8Array(s.size);
  let seqEnd = 0;
  try {
    for (const batch of batches) {
      const busy: Array<[number, number]> = [];
      const running: Promise<void>[] = [];
      const checks: Array<() => void> = [];
      for (const raw of batch) {
        if (raw.kind === 'flush') {
          running.push(opened.flush());
          continue;
        }
        let offset = raw.kind === 'write' && raw.seq ? seqEnd : raw.offset;
        if (offset >= s.size) offset = 0;
        const length = Math.min(raw.length, s.size - offset);
        if (busy.some(([a, b]) => offset < b && offset + length > a)) continue;
        busy.push([offset, offset + length]);
        switch (raw.kind) {
          case 'write': {
            const data = patternFor({ offset, fill: raw.fill }, length);
            model.set(data, offset);
            seqEnd = offset + length;
            running.push(opened.write(offset, data));
            break;
          }
          case 'zero':
            model.fill(0, offset, offset + length);
            running.push(opened.writeZeroes(offset, length, { mayUnmap: raw.unmap }));
            break;
          case 'discard': {
            // Whole clusters only; they read as zeros afterwards (v3, no backing).
            const first = Math.ceil(offset / s.clusterSize) * s.clusterSize;
            const end = offset + length === s.size ? s.size : Math.floor((offset + length) / s.clusterSize) * s.clusterSize;
            if (end > first) model.fill(0, first, end);
            running.push(opened.discard(offset, length));
            break;
          }
          case 'read': {
            const expected = model.slice(offset, offset + length);
            const buf = new Uint8Array(length);
            running.push(opened.read(offset, buf));
            checks.push(() => assert.ok(Buffer.from(buf).equals(Buffer.from(expected)), `read ${offset}+${length}`));
            break;
          }
        }
      }
      await Promise.all(running);
      for (const c of checks) c();
      const all = new Uint8Array(s.size);
      await opened.read(0, all);
      assert.ok(Buffer.from(all).equals(Buffer.from(model)), 'disk matches the model after the batch');
    }
    await opened.close();
    d = null;
    const c = await checkBytes(host.bytes());
    assert.deepEqual({ corruptions: c.corruptions, checkErrors: c.checkErrors }, { corruptions: 0, checkErrors: 0 });
    const again = await openOnHost(new MemoryHostFile('model.qcow2', host.bytes()), { readOnly: true });
    try {
      const all = new Uint8Array(s.size);
      await again.read(0, all);
      assert.ok(Buffer.from(all).equals(Buffer.from(model)), 'reopened image matches the model');
    } finally {
      await again.close();
    }
  } finally {
    if (d) await d.close().catch(() => undefined);
  }
}

const SETUPS: Setup[] = [
  // 8 L2 tables and 4 cached: tables and refcount blocks are evicted and reloaded under load.
  { name: '4 KiB clusters, small caches', size: 16 * 1024 * 1024, clusterSize: 4096, options: { cluster_size: '4096' }, l2CacheSize: 16384, weight: 0.4 },
  { name: '64 KiB clusters', size: 2 * 1024 * 1024, clusterSize: 65536, options: {}, weight: 1 },
  { name: 'extended L2', size: 2 * 1024 * 1024, clusterSize: 65536, options: { extended_l2: 'on', cluster_size: '65536' }, weight: 1 },
];

for (const s of SETUPS) {
  test(`concurrent random operations match an in-memory disk (${s.name})`, async () => {
    const base = await freshImageBytes(s.size, s.options);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(opArb(s), { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 10 }), (batches) => runBatches(s, base, batches)),
      { numRuns: Math.max(1, Math.round(s.weight * Number(process.env['VDISK_MODEL_RUNS'] ?? 40))) },
    );
  });
}
