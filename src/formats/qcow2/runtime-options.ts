/**
 * qcow2's runtime options as QEMU takes them at open (l2-cache-size,
 * refcount-cache-size, cache-size, l2-cache-entry-size, lazy-refcounts),
 * checked against the image's header and turned into cache sizes. The CLI
 * parses them from option strings; this is where they meet the image.
 *
 * What vdisk cannot apply is checked and then refused or left as the image
 * says, never dropped silently:
 * - l2-cache-entry-size is validated; the cache always holds whole L2 tables
 *   (one cluster each), so the entry size has no effect.
 * - lazy-refcounts is validated against the image; the driver follows the
 *   image's lazy_refcounts bit, so asking for the other setting on a writable
 *   open is refused (amend changes the bit).
 */
import { VdiskError } from '../../errors.js';
import type { Qcow2Tuning } from '../registry-types.js';
import { COMPAT_LAZY_REFCOUNTS, hasExtendedL2, type Qcow2Header } from './header.js';

/** QEMU's smallest refcount cache, in clusters (MIN_REFCOUNT_CACHE_SIZE). */
const MIN_REFCOUNT_CLUSTERS = 4;

/** What the options are checked and sized against, from the image's header. */
export interface TuningGeometry {
  readonly clusterSize: number;
  readonly virtualSize: number;
  readonly extendedL2: boolean;
  readonly version: 2 | 3;
  readonly lazyRefcounts: boolean;
}

/**
 * The L2 and refcount cache sizes for the image, as qcow2's read_cache_sizes
 * decides them: the L2 cache never exceeds what maps the whole disk, and a
 * combined cache-size goes to the L2 cache first, keeping the refcount
 * cache's minimum. Absent: the driver's default.
 */
export function cacheSizes(tuning: Qcow2Tuning, geometry: TuningGeometry): { l2CacheSize?: number; refcountCacheSize?: number } {
  if (tuning.cacheSize === undefined) {
    return {
      ...(tuning.l2CacheSize !== undefined ? { l2CacheSize: tuning.l2CacheSize } : {}),
      ...(tuning.refcountCacheSize !== undefined ? { refcountCacheSize: tuning.refcountCacheSize } : {}),
    };
  }
  const { clusterSize } = geometry;
  const tables = Math.ceil(geometry.virtualSize / clusterSize);
  const wholeDisk = Math.ceil((tables * (geometry.extendedL2 ? 16 : 8)) / clusterSize) * clusterSize;
  const minRefcount = MIN_REFCOUNT_CLUSTERS * clusterSize;
  const combined = tuning.cacheSize;
  if (tuning.l2CacheSize !== undefined) {
    const l2CacheSize = Math.min(wholeDisk, tuning.l2CacheSize);
    return { l2CacheSize, refcountCacheSize: combined - l2CacheSize };
  }
  if (tuning.refcountCacheSize !== undefined) return { l2CacheSize: combined - tuning.refcountCacheSize, refcountCacheSize: tuning.refcountCacheSize };
  if (combined >= wholeDisk + minRefcount) return { l2CacheSize: wholeDisk, refcountCacheSize: combined - wholeDisk };
  const refcountCacheSize = Math.min(combined, minRefcount);
  return { l2CacheSize: combined - refcountCacheSize, refcountCacheSize };
}

/** The checks that need the image: entry size against the cluster size, lazy refcounts against the version and the image's bit. */
export function checkTuning(file: string, tuning: Qcow2Tuning, geometry: TuningGeometry, readOnly: boolean): void {
  const { l2CacheEntrySize: entrySize, lazyRefcounts } = tuning;
  if (entrySize !== undefined) {
    const powerOfTwo = entrySize > 0 && (entrySize & (entrySize - 1)) === 0;
    if (!powerOfTwo || entrySize < 512 || entrySize > geometry.clusterSize) {
      throw new VdiskError('EINVAL', `L2 cache entry size must be a power of two between 512 and the cluster size (${geometry.clusterSize})`, {
        file,
        field: 'l2-cache-entry-size',
      });
    }
  }
  if (lazyRefcounts === true && geometry.version < 3) {
    throw new VdiskError('EINVAL', 'Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level', { file, field: 'lazy-refcounts' });
  }
  if (lazyRefcounts !== undefined && lazyRefcounts !== geometry.lazyRefcounts && !readOnly) {
    const bit = geometry.lazyRefcounts ? 'on' : 'off';
    throw new VdiskError(
      'ENOTSUP',
      `vdisk follows the image's lazy_refcounts=${bit} and cannot change it at open: use 'vdisk amend -o lazy_refcounts=${lazyRefcounts ? 'on' : 'off'}'`,
      { file, field: 'lazy-refcounts' },
    );
  }
}

/** The header's part of TuningGeometry. */
export function tuningGeometry(h: Qcow2Header): TuningGeometry {
  return {
    clusterSize: 2 ** h.clusterBits,
    virtualSize: h.size,
    extendedL2: hasExtendedL2(h),
    version: h.version,
    lazyRefcounts: (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
  };
}

/** Checks `tuning` against the image and returns the cache sizes it asks for (absent: the driver's defaults). */
export function applyTuning(file: string, tuning: Qcow2Tuning, h: Qcow2Header, readOnly: boolean): { l2CacheSize?: number; refcountCacheSize?: number } {
  const geometry = tuningGeometry(h);
  checkTuning(file, tuning, geometry, readOnly);
  return cacheSizes(tuning, geometry);
}
