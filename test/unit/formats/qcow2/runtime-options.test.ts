import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cacheSizes, checkTuning, type TuningGeometry } from '../../../../src/formats/qcow2/runtime-options.js';
import type { Qcow2Tuning } from '../../../../src/formats/registry-types.js';

const GEOMETRY: TuningGeometry = { clusterSize: 65536, virtualSize: 1 << 30, extendedL2: false, version: 3, lazyRefcounts: false };

test('cache-size is split between the L2 and refcount caches as qcow2 does, the L2 cache no larger than the disk needs', () => {
  // 1 GiB in 64 KiB clusters: 16384 entries of 8 bytes, two tables map it all.
  assert.deepEqual(cacheSizes({ cacheSize: 1 << 20 }, GEOMETRY), { l2CacheSize: 131072, refcountCacheSize: (1 << 20) - 131072 });
  assert.deepEqual(cacheSizes({ cacheSize: 300000 }, GEOMETRY), { l2CacheSize: 300000 - 262144, refcountCacheSize: 262144 });
  assert.deepEqual(cacheSizes({ cacheSize: 1 << 20, l2CacheSize: 65536 }, GEOMETRY), { l2CacheSize: 65536, refcountCacheSize: (1 << 20) - 65536 });
  assert.deepEqual(cacheSizes({ cacheSize: 1 << 20, refcountCacheSize: 65536 }, GEOMETRY), { l2CacheSize: (1 << 20) - 65536, refcountCacheSize: 65536 });
  assert.deepEqual(cacheSizes({ cacheSize: 1 << 22 }, { ...GEOMETRY, extendedL2: true }), { l2CacheSize: 262144, refcountCacheSize: (1 << 22) - 262144 });
  assert.deepEqual(cacheSizes({ l2CacheSize: 4096, refcountCacheSize: 8192 }, GEOMETRY), { l2CacheSize: 4096, refcountCacheSize: 8192 });
  assert.deepEqual(cacheSizes({}, GEOMETRY), {});
});

test('options that need the image are checked against it; what vdisk cannot apply is refused', () => {
  const refusal = (tuning: Qcow2Tuning, readOnly: boolean, geometry: TuningGeometry = GEOMETRY): string => {
    try {
      checkTuning('t.qcow2', tuning, geometry, readOnly);
      return 'accepted';
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  };
  assert.equal(refusal({ l2CacheEntrySize: 4096 }, false), 'accepted');
  assert.equal(refusal({ l2CacheEntrySize: 100 }, true), 'L2 cache entry size must be a power of two between 512 and the cluster size (65536)');
  assert.equal(refusal({ l2CacheEntrySize: 131072 }, true), 'L2 cache entry size must be a power of two between 512 and the cluster size (65536)');
  assert.equal(refusal({ lazyRefcounts: true }, true, { ...GEOMETRY, version: 2 }), 'Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level');
  // Reading is the same either way; writing would follow the image's bit, so a different one is refused.
  assert.equal(refusal({ lazyRefcounts: true }, true), 'accepted');
  assert.equal(refusal({ lazyRefcounts: false }, false), 'accepted');
  assert.match(refusal({ lazyRefcounts: true }, false), /cannot change it at open: use 'vdisk amend -o lazy_refcounts=on'/);
});
