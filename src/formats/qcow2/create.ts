/**
 * qcow2 image creation, byte-identical to `qemu-img create -f qcow2`.
 *
 * QEMU creates an image in steps (block/qcow2.c qcow2_co_create): a bare header
 * and a one-cluster refcount table + block, then it opens that image, counts
 * the first three clusters, rewrites the header, grows the L1 table, preallocates
 * and sets the backing file. Every later cluster position depends on QEMU's
 * allocator (first free cluster, refcount blocks that describe themselves, a
 * refcount table that moves when it grows), so the layout is computed here by
 * replaying that allocator over an in-memory sparse file, then written at once.
 */
import { VdiskError } from '../../errors.js';
import { NodeHostFile } from '../../host/node-file.js';
import type { HostFile } from '../../host/host-file.js';
import type { CreateOptions } from '../registry-types.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTL2,
  V3_HEADER_SIZE,
  l1EntriesFor,
  serializeHeaderCluster,
  type ParsedHeaderCluster,
} from './header.js';
import { NO_EXTENSIONS } from './extensions.js';
import { INT_MAX, QemuLayoutAllocator, REQUEST_MAX_BYTES, SparseImage, u64 } from './create-allocator.js';
import { parseCreateSettings, type Preallocation, type Qcow2CreateSettings } from './create-settings.js';

export { parseCreateSettings, type Preallocation, type Qcow2CreateSettings } from './create-settings.js';
export { refcountMetadataBlocks } from './create-allocator.js';

const COPIED = 1n << 63n;

/** The complete initial image: what createQcow2 writes. */
export interface Qcow2Layout {
  readonly header: ParsedHeaderCluster;
  readonly clusterSize: number;
  /** Written clusters of the image file by cluster index (all others read as zeros). */
  readonly clusters: ReadonlyMap<number, Uint8Array>;
  readonly fileLength: number;
  /** A range of the image file to preallocate (falloc) or fill with zeros (full). */
  readonly dataArea: { readonly offset: number; readonly length: number } | null;
  /** Length of the external data file, when there is one. */
  readonly dataFileLength: number;
}

/**
 * Computes the image QEMU would create for `settings`, cluster for cluster.
 *
 * @example
 * const layout = planQcow2Layout(parseCreateSettings({ size: 1 << 30, options: {} }));
 * layout.fileLength; // 0x30010, as qemu-img create -f qcow2 x 1G
 */
export function planQcow2Layout(s: Qcow2CreateSettings): Qcow2Layout {
  const cs = 2 ** s.clusterBits;
  const image = new SparseImage(cs);
  const l2EntrySize = s.extendedL2 ? 16 : 8;
  const l2Entries = cs / l2EntrySize;
  // Step 1: bare header, then a refcount table whose entry 0 points at an empty block.
  image.length = 3 * cs;
  image.write(cs, u64(2 * cs));
  const reftable = new Array<number>(cs / 8).fill(0);
  reftable[0] = 2 * cs;
  const alloc = new QemuLayoutAllocator(image, { clusterBits: s.clusterBits, refcountOrder: s.refcountOrder, reftableOffset: cs, reftable });
  // Step 2: the image is opened and its first three clusters counted.
  alloc.allocClusters(3 * cs);

  // Step 3: truncate to the virtual size: grow L1 (exact size), then preallocate.
  const l1Size = l1EntriesFor(s.size, s.clusterBits, l2EntrySize);
  const l1 = new Array<number>(l1Size).fill(0);
  let l1Offset = 0;
  if (l1Size > 0) {
    l1Offset = alloc.allocClusters(l1Size * 8);
    image.write(l1Offset, new Uint8Array(l1Size * 8));
  }
  let dataArea: Qcow2Layout['dataArea'] = null;

  const ensureL2 = (l1Index: number): number => {
    const existing = l1[l1Index] ?? 0;
    if (existing !== 0) return existing;
    const l2 = alloc.allocClusters(cs);
    image.writeZeroCluster(l2);
    l1[l1Index] = l2;
    image.write(l1Offset + l1Index * 8, u64(l2, COPIED));
    return l2;
  };
  const link = (guest: number, host: number, count: number): void => {
    const l1Index = Math.floor(guest / cs / l2Entries);
    const l2 = image.cluster(ensureL2(l1Index));
    const view = new DataView(l2.buffer, l2.byteOffset, l2.byteLength);
    const first = (guest / cs) % l2Entries;
    for (let i = 0; i < count; i++) view.setBigUint64((first + i) * l2EntrySize, BigInt(host + i * cs) | COPIED, false);
  };

  const dataFile = s.dataFile !== null;
  const preallocateMetadata = (): void => {
    // preallocate_co: qcow2_alloc_host_offset in chunks, each stopping where a
    // new L2 table breaks the contiguity of the host clusters.
    let remainingTotal = s.size;
    let guest = 0;
    let lastHost = 0;
    let lastBytes = 0;
    while (remainingTotal > 0) {
      const want = Math.min(remainingTotal, Math.floor(INT_MAX / cs) * cs);
      let start = guest;
      let remaining = want;
      let clusterOffset = -1;
      let hostOffset = -1;
      let cur = 0;
      for (;;) {
        if (hostOffset < 0 && clusterOffset >= 0) hostOffset = clusterOffset;
        start += cur;
        remaining -= cur;
        if (clusterOffset >= 0) clusterOffset += cur;
        if (remaining === 0) break;
        cur = remaining;
        ensureL2(Math.floor(start / cs / l2Entries));
        const l2Index = (start / cs) % l2Entries;
        let nb = Math.min(Math.ceil(cur / cs), l2Entries - l2Index, Math.floor(REQUEST_MAX_BYTES / cs));
        let at: number;
        if (dataFile) at = start;
        else if (clusterOffset < 0) at = alloc.allocClusters(nb * cs);
        else {
          nb = alloc.allocClustersAt(clusterOffset, nb);
          at = clusterOffset;
          if (nb === 0) {
            cur = 0;
            break;
          }
        }
        cur = Math.min(cur, nb * cs);
        if (clusterOffset < 0) clusterOffset = at;
        link(start, dataFile ? start : at, nb);
      }
      const done = want - remaining;
      lastHost = hostOffset;
      lastBytes = done;
      remainingTotal -= done;
      guest += done;
    }
    // QEMU extends the file to the end of the last allocated cluster.
    const end = lastHost + Math.ceil(lastBytes / cs) * cs;
    if (!dataFile && end > image.length) image.length = end;
  };

  if (s.preallocation === 'metadata' || (dataFile && s.preallocation !== 'off')) {
    preallocateMetadata();
  } else if (s.preallocation === 'falloc' || s.preallocation === 'full') {
    let oldFileSize = Math.ceil(image.length / cs) * cs;
    oldFileSize = (alloc.lastUsedCluster(oldFileSize) + 1) * cs;
    let dataClusters = Math.ceil(s.size / cs);
    const l2Tables = Math.ceil(dataClusters / l2Entries) + 1;
    const start = alloc.refcountArea({ start: oldFileSize, additionalClusters: dataClusters + l2Tables, exactSize: true, newBlockIndex: 0, newBlockOffset: 0 });
    alloc.allocClustersAt(start, dataClusters);
    const newFileSize = start + dataClusters * cs;
    if (newFileSize > image.length) {
      dataArea = { offset: image.length, length: newFileSize - image.length };
      image.length = newFileSize;
    }
    let host = start;
    let guest = 0;
    while (dataClusters > 0) {
      const nb = Math.min(dataClusters, l2Entries - ((guest / cs) % l2Entries));
      link(guest, host, nb);
      guest += nb * cs;
      host += nb * cs;
      dataClusters -= nb;
    }
  }

  const header: ParsedHeaderCluster = {
    header: {
      version: s.version,
      backingFileOffset: 0,
      backingFileSize: 0,
      clusterBits: s.clusterBits,
      size: s.size,
      cryptMethod: 0,
      l1Size,
      l1TableOffset: l1Offset,
      refcountTableOffset: alloc.reftableOffset,
      refcountTableClusters: alloc.reftableClusters,
      nbSnapshots: 0,
      snapshotsOffset: 0,
      incompatibleFeatures: (dataFile ? INCOMPAT_DATA_FILE : 0n) | (s.compressionType !== 0 ? INCOMPAT_COMPRESSION : 0n) | (s.extendedL2 ? INCOMPAT_EXTL2 : 0n),
      compatibleFeatures: s.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n,
      autoclearFeatures: s.dataFileRaw ? AUTOCLEAR_DATA_FILE_RAW : 0n,
      refcountOrder: s.refcountOrder,
      headerLength: s.version === 3 ? V3_HEADER_SIZE : 72,
      compressionType: s.compressionType,
    },
    extensions: { ...NO_EXTENSIONS, backingFormat: s.backingFormat, dataFile: s.dataFile },
    backingFile: s.backingFile,
    unknownHeaderFields: new Uint8Array(0),
  };
  image.write(0, serializeHeaderCluster(header, cs));
  image.length = Math.max(image.length, 3 * cs);
  return { header, clusterSize: cs, clusters: image.clusters, fileLength: image.length, dataArea, dataFileLength: s.size };
}

/**
 * Creates a qcow2 image as `qemu-img create -f qcow2` does, byte for byte.
 *
 * @example
 * await createQcow2('/tmp/a.qcow2', { size: 1 << 30, options: { cluster_size: '64k' } });
 */
export async function createQcow2(path: string, options: CreateOptions): Promise<void> {
  const settings = parseCreateSettings(options);
  const layout = planQcow2Layout(settings);
  if (settings.dataFile !== null) await createDataFile(settings.dataFile, settings);
  const host = await NodeHostFile.open(path, { create: true, truncate: true });
  try {
    // A device cannot be reserved or grown into (QEMU refuses as its file driver does); metadata preallocation
    // is taken, and writeLayout then writes the whole layout, data clusters included, as zeros.
    if (host.device && (settings.preallocation === 'falloc' || settings.preallocation === 'full')) {
      const why = `Preallocation mode '${settings.preallocation}' unsupported for this non-regular file`;
      throw new VdiskError('ENOTSUP', `Could not resize image: Failed to resize underlying file: ${why}`, { file: path, field: 'preallocation' });
    }
    await writeLayout(host, layout);
    if (layout.dataArea !== null) await preallocate(host, layout.dataArea, settings.preallocation);
    await host.sync();
  } finally {
    await host.close();
  }
}

async function writeLayout(host: HostFile, layout: Qcow2Layout): Promise<void> {
  const cs = layout.clusterSize;
  // The layout leaves out clusters of zeros, which a new file reads anyway; a device holds what it held before.
  const indexes = host.device === true ? Array.from({ length: Math.ceil(layout.fileLength / cs) }, (_, i) => i) : [...layout.clusters.keys()].sort((a, b) => a - b);
  const zeros = host.device === true ? new Uint8Array(cs) : null;
  // Contiguous clusters go out in one vectored write.
  let i = 0;
  while (i < indexes.length) {
    const first = indexes[i] ?? 0;
    const run: Uint8Array[] = [];
    let next = first;
    while (i < indexes.length && indexes[i] === next && run.length < 256) {
      const c = layout.clusters.get(next) ?? zeros;
      if (c !== null) run.push(c);
      next++;
      i++;
    }
    const offset = first * cs;
    const end = Math.min(offset + run.length * cs, layout.fileLength);
    const last = run.length - 1;
    const lastBuf = run[last];
    if (lastBuf !== undefined) run[last] = lastBuf.subarray(0, end - (offset + last * cs));
    await host.writev(run, offset);
  }
  await host.truncate(layout.fileLength);
}

async function preallocate(host: HostFile, area: { offset: number; length: number }, mode: Preallocation): Promise<void> {
  if (mode === 'falloc') {
    await host.allocate(area.offset, area.length);
    return;
  }
  const chunk = new Uint8Array(Math.min(area.length, 1 << 20));
  for (let pos = 0; pos < area.length; pos += chunk.length) {
    const n = Math.min(chunk.length, area.length - pos);
    await host.write(n === chunk.length ? chunk : chunk.subarray(0, n), area.offset + pos);
  }
}

async function createDataFile(path: string, s: Qcow2CreateSettings): Promise<void> {
  const host = await NodeHostFile.open(path, { create: true, truncate: true });
  try {
    await host.truncate(s.size);
    if (s.preallocation === 'falloc' || s.preallocation === 'full') await preallocate(host, { offset: 0, length: s.size }, s.preallocation);
    await host.sync();
  } finally {
    await host.close();
  }
}
