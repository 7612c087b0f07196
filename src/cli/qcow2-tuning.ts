/**
 * qcow2's runtime options as qemu-img and qemu-io take them (l2-cache-size,
 * refcount-cache-size, cache-size, l2-cache-entry-size, lazy-refcounts),
 * applied where the block layer opens the top image's driver.
 *
 * The block layer's OpenOptions carries no driver tuning, but the qcow2
 * driver's own open options take the two cache sizes: the engine wraps the
 * format table so that the top image, when it turns out to be qcow2, is
 * opened with them. Values are parsed only then, as QEMU does: a raw image
 * refuses these options by name instead (driver-options.ts).
 *
 * What vdisk cannot apply is checked and then refused or left as the image
 * says, never dropped silently:
 * - l2-cache-entry-size is validated; vdisk's cache always holds whole L2
 *   tables (one cluster each), so the entry size has no effect.
 * - lazy-refcounts is validated against the image; the driver follows the
 *   image's lazy_refcounts bit, so asking for the other setting on a writable
 *   open is refused (amend changes the bit).
 */
import { openImage, openImageWith, type FormatTable, type ImageNode, type OpenOptions } from '../block/index.js';
import { VdiskError } from '../errors.js';
import type { BlockDriver } from '../formats/driver.js';
import { formatByName, probeFormat } from '../formats/registry.js';
import type { DriverOpenOptions, FormatModule } from '../formats/registry-types.js';
import { parseQemuSize } from './create-options.js';

/** The qcow2 options handled here, by QEMU's names. */
export const QCOW2_TUNING_KEYS: readonly string[] = ['l2-cache-size', 'refcount-cache-size', 'cache-size', 'l2-cache-entry-size', 'lazy-refcounts'];

/** QEMU's smallest refcount cache, in clusters (MIN_REFCOUNT_CACHE_SIZE). */
const MIN_REFCOUNT_CLUSTERS = 4;

/** The open options the CLI gives its engine: the block layer's, plus qcow2 tuning by QEMU's option names. */
export type EngineOpenOptions = OpenOptions & {
  /** Runtime options for the top image if it is qcow2 (keys of QCOW2_TUNING_KEYS), values as typed. */
  readonly qcow2Options?: ReadonlyMap<string, string>;
};

/** What sizing the cache needs to know of the image (the options that depend on it were given). */
interface Geometry {
  readonly clusterSize: number;
  readonly virtualSize: number;
  readonly extendedL2: boolean;
  readonly compat: string | undefined;
  readonly lazyRefcounts: boolean;
}

interface Tuning {
  readonly l2CacheSize?: number;
  readonly refcountCacheSize?: number;
  readonly cacheSize?: number;
  readonly entrySize?: number;
  readonly lazyRefcounts?: boolean;
}

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
function parseTuning(file: string, options: ReadonlyMap<string, string>): Tuning {
  const l2CacheSize = sizeValue(file, options, 'l2-cache-size');
  const refcountCacheSize = sizeValue(file, options, 'refcount-cache-size');
  const cacheSize = sizeValue(file, options, 'cache-size');
  const entrySize = sizeValue(file, options, 'l2-cache-entry-size');
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
    ...(entrySize !== undefined ? { entrySize } : {}),
    ...(lazyRefcounts !== undefined ? { lazyRefcounts } : {}),
  };
}

/** Whether applying `tuning` needs the image's geometry or features first. */
function needsGeometry(tuning: Tuning): boolean {
  return tuning.cacheSize !== undefined || tuning.entrySize !== undefined || tuning.lazyRefcounts !== undefined;
}

async function readGeometry(driver: BlockDriver): Promise<Geometry> {
  const info = await driver.info();
  const data = info.formatSpecific?.data ?? {};
  const compat = data['compat'];
  return {
    clusterSize: info.clusterSize ?? 65536,
    virtualSize: info.virtualSize,
    extendedL2: data['extended-l2'] === true,
    compat: typeof compat === 'string' ? compat : undefined,
    lazyRefcounts: data['lazy-refcounts'] === true,
  };
}

/**
 * The L2 and refcount cache sizes for the image, as qcow2's read_cache_sizes
 * decides them: the L2 cache never exceeds what maps the whole disk, and a
 * combined cache-size goes to the L2 cache first, keeping the refcount
 * cache's minimum.
 */
export function cacheSizes(tuning: Tuning, geometry: Geometry | undefined): { l2CacheSize?: number; refcountCacheSize?: number } {
  if (tuning.cacheSize === undefined || geometry === undefined) {
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

/** The checks that need the image: entry size against the cluster size, lazy refcounts against the version. */
function checkAgainstImage(file: string, tuning: Tuning, geometry: Geometry, readOnly: boolean): void {
  const { entrySize, lazyRefcounts } = tuning;
  if (entrySize !== undefined) {
    const powerOfTwo = entrySize > 0 && (entrySize & (entrySize - 1)) === 0;
    if (!powerOfTwo || entrySize < 512 || entrySize > geometry.clusterSize) {
      throw optionError(file, 'l2-cache-entry-size', `L2 cache entry size must be a power of two between 512 and the cluster size (${geometry.clusterSize})`);
    }
  }
  if (lazyRefcounts === true && geometry.compat === '0.10') {
    throw optionError(file, 'lazy-refcounts', 'Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level');
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

/** The qcow2 module with the tuning applied to the opening of `top` (backing files keep their defaults, as in QEMU). */
function tunedModule(module: FormatModule, top: string, options: ReadonlyMap<string, string>): FormatModule {
  const open = async (path: string, driverOptions: DriverOpenOptions): Promise<BlockDriver> => {
    if (path !== top) return module.open(path, driverOptions);
    const tuning = parseTuning(path, options);
    let geometry: Geometry | undefined;
    if (needsGeometry(tuning)) {
      // A first, read-only look at the header: the split of cache-size depends on it.
      const look = await module.open(path, { ...driverOptions, readOnly: true, noRepair: true });
      try {
        geometry = await readGeometry(look);
      } finally {
        await look.close();
      }
      checkAgainstImage(path, tuning, geometry, driverOptions.readOnly);
    }
    return module.open(path, { ...driverOptions, ...cacheSizes(tuning, geometry) });
  };
  return { name: module.name, probe: (head) => module.probe(head), create: (path, o) => module.create(path, o), open };
}

/**
 * The engine's open: the block layer's, with qcow2 runtime options applied
 * to the top image when some are given.
 */
export function openTuned(path: string, options: EngineOpenOptions): Promise<ImageNode> {
  const { qcow2Options, ...rest } = options;
  if (qcow2Options === undefined || qcow2Options.size === 0) return openImage(path, rest);
  return openImageWith(path, rest, tunedFormats(path, qcow2Options, { probe: probeFormat, byName: formatByName }));
}

/** `formats` with its qcow2 module opening the image at `top` with the runtime options applied. */
export function tunedFormats(top: string, qcow2Options: ReadonlyMap<string, string>, formats: FormatTable): FormatTable {
  return {
    probe: (head) => formats.probe(head),
    byName: (name) => {
      const module = formats.byName(name);
      return module.name === 'qcow2' ? tunedModule(module, top, qcow2Options) : module;
    },
  };
}
