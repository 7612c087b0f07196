/**
 * Creates an empty ploop image exactly as `qemu-img create -f parallels` does
 * (same bytes for the same options): a v2 header, a zeroed BAT padded to whole
 * clusters, no data clusters.
 */
import { VdiskError } from '../../errors.js';
import { NodeHostFile } from '../../host/node-file.js';
import { alignUp, parseSize } from '../../util/size.js';
import type { CreateOptions } from '../registry-types.js';
import { encodeHeader, SECTOR, type PloopHeader } from './header.js';
import { batEntryOffset } from './layout.js';

export const DEFAULT_CLUSTER_SIZE = 1024 * 1024;
/** QEMU's cap: a disk holds fewer than 2^32 clusters. */
const MAX_CLUSTERS = 2 ** 32;
/** QEMU's geometry constants for the cosmetic CHS fields. */
const HEADS = 16;
const SECTORS_PER_CYLINDER = 32;
const KNOWN_OPTIONS = new Set(['cluster_size', 'size']);

/** The header QEMU writes for a disk of `size` bytes with clusters of `clusterSize` bytes (both already validated). */
export function newImageHeader(size: number, clusterSize: number): PloopHeader {
  const batEntries = Math.ceil(size / clusterSize);
  const headerClusters = Math.ceil(batEntryOffset(batEntries) / clusterSize);
  return {
    version: 2,
    heads: HEADS,
    // QEMU stores the low 32 bits of size / 512 / 16 / 32.
    cylinders: Math.floor(size / SECTOR / HEADS / SECTORS_PER_CYLINDER) % 2 ** 32,
    clusterSectors: clusterSize / SECTOR,
    batEntries,
    sizeSectors: size / SECTOR,
    inUse: 0,
    dataOff: (headerClusters * clusterSize) / SECTOR,
    flags: 0,
    extOff: 0,
  };
}

/** Validates qemu-img's create options for parallels; returns size and cluster size rounded up to sectors. */
export function parseCreateOptions(path: string, options: CreateOptions): { size: number; clusterSize: number } {
  for (const key of Object.keys(options.options)) {
    if (!KNOWN_OPTIONS.has(key)) throw new VdiskError('EINVAL', `${path}: Invalid parameter '${key}'`, { file: path, field: key });
  }
  if (options.backingFile !== undefined) {
    throw new VdiskError('ENOTSUP', `${path}: Backing file not supported for file format 'parallels'`, { file: path, field: 'backing_file' });
  }
  const raw = options.options['cluster_size'];
  const clusterSize = alignUp(raw === undefined ? DEFAULT_CLUSTER_SIZE : parseSize(raw, 'cluster_size'), SECTOR);
  const size = alignUp(options.size, SECTOR);
  // INT64_MAX / 2^32, as QEMU computes it.
  if (clusterSize >= 0x7fffffff) {
    throw new VdiskError('EINVAL', `${path}: Cluster size is too large`, { file: path, field: 'cluster_size' });
  }
  if (size >= MAX_CLUSTERS * clusterSize) {
    throw new VdiskError('EFBIG', `${path}: Image size is too large for this cluster size`, { file: path, field: 'size' });
  }
  return { size, clusterSize };
}

/** `qemu-img create -f parallels [-o cluster_size=N] path size`. */
export async function createPloop(path: string, options: CreateOptions): Promise<void> {
  const { size, clusterSize } = parseCreateOptions(path, options);
  const header = newImageHeader(size, clusterSize);
  const first = new Uint8Array(SECTOR);
  encodeHeader(header, first);
  const host = await NodeHostFile.open(path, { create: true, truncate: true });
  try {
    await host.write(first, 0);
    // The rest of the header clusters is zero: a sparse extension reads the same.
    await host.truncate(header.dataOff * SECTOR);
    await host.sync();
  } finally {
    await host.close();
  }
}
