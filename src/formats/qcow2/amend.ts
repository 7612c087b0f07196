/**
 * qemu-img amend for qcow2 (QEMU's qcow2_amend_options): compat upgrade and
 * downgrade, lazy_refcounts, refcount_bits, size, data_file; the same checks
 * and messages. Options arrive as qemu-img parsed them (bools as on/off,
 * sizes and numbers in decimal).
 *
 * Order as QEMU: validate everything, upgrade, lazy refcounts, data file
 * name, size, refcount width, downgrade last (so features that block it may
 * be removed by the same command). One difference: the size change comes
 * before the refcount width change, since the driver's refcount state is
 * rebuilt from disk only on the next open.
 */
import { VdiskError } from '../../errors.js';
import type { ProgressCallback } from '../driver.js';
import {
  COMPAT_LAZY_REFCOUNTS,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DIRTY,
  hasDataFile,
  parseHeaderCluster,
  serializeHeaderCluster,
  type ParsedHeaderCluster,
} from './header.js';
import type { Qcow2BitmapOps } from './bitmap-ops.js';
import type { Qcow2MetaContext } from './meta-context.js';
import { changeRefcountOrder } from './refcount-rebuild.js';
import { loadSnapshots } from './snapshot-ops.js';
import { expandZeroClusters } from './zero-expand.js';

export interface AmendOptions {
  readonly progress?: ProgressCallback | undefined;
  /** The driver's resize (grow, or shrink where the driver allows it). */
  readonly resize: (newLength: number) => Promise<void>;
  /** Called when the driver's in-memory state no longer describes the file. */
  readonly invalidate: () => void;
  /** The driver's persistent bitmaps (saved before the refcounts are rebuilt, dropped by a downgrade). */
  readonly bitmaps: Pick<Qcow2BitmapOps, 'saveTracked' | 'removeAll'>;
}

function invalid(message: string, field: string): VdiskError {
  return new VdiskError('EINVAL', message, { field });
}

interface Plan {
  version: 2 | 3;
  lazy: boolean;
  refcountOrder: number;
  size: number | null;
  dataFile: string | null;
}

/** Validates the options against the image (QEMU's option loop); nothing is written. */
function plan(ctx: Qcow2MetaContext, options: Readonly<Record<string, string>>): Plan {
  const parsed = ctx.parsed();
  const h = parsed.header;
  const p: Plan = {
    version: h.version,
    lazy: (h.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
    refcountOrder: h.refcountOrder,
    size: null,
    dataFile: null,
  };
  for (const [key, value] of Object.entries(options)) {
    if (key === 'compat') {
      if (value === '0.10' || value === 'v2') p.version = 2;
      else if (value === '1.1' || value === 'v3') p.version = 3;
      else throw invalid(`Unknown compatibility level ${value}`, 'compat');
    } else if (key.startsWith('encrypt.') || key === 'encryption') {
      throw new VdiskError('ENOTSUP', "Can't amend encryption options - encryption not present", { field: key });
    } else if (key === 'lazy_refcounts') {
      p.lazy = value === 'on';
    } else if (key === 'refcount_bits') {
      const bits = Number(value);
      if (!Number.isInteger(bits) || bits <= 0 || bits > 64 || (bits & (bits - 1)) !== 0) {
        throw invalid('Refcount width must be a power of two and may not exceed 64 bits', 'refcount_bits');
      }
      p.refcountOrder = Math.log2(bits);
    } else if (key === 'size') {
      p.size = Number(value);
    } else if (key === 'data_file') {
      if (!hasDataFile(h)) throw invalid('data-file can only be set for images that use an external data file', 'data_file');
      p.dataFile = value;
    } else if (key === 'data_file_raw') {
      if (value === 'on' && !ctx.img.dataFileRaw) throw invalid('data-file-raw cannot be set on existing images', 'data_file_raw');
    } else if (key === 'backing_file' || key === 'backing_fmt') {
      const current = key === 'backing_file' ? parsed.backingFile : parsed.extensions.backingFormat;
      if (value !== (current ?? '')) throw invalid("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.", key);
    } else {
      throw invalid(`Invalid parameter '${key}'`, key);
    }
  }
  return p;
}

async function writeHeader(ctx: Qcow2MetaContext, next: ParsedHeaderCluster): Promise<void> {
  const { img } = ctx;
  const cluster0 = serializeHeaderCluster(next, img.clusterSize);
  await img.host.write(cluster0, 0);
  await img.host.sync();
  ctx.setParsed(parseHeaderCluster(cluster0, { file: img.file, fileSize: await img.host.size() }));
}

function withFeatures(parsed: ParsedHeaderCluster, changes: Partial<ParsedHeaderCluster['header']>): ParsedHeaderCluster {
  return { ...parsed, header: { ...parsed.header, ...changes } };
}

/**
 * Applies `options` to an opened, writable image.
 *
 * @example
 * await amendQcow2(ctx, { compat: '0.10' }, { resize, invalidate });
 */
export async function amendQcow2(ctx: Qcow2MetaContext, options: Readonly<Record<string, string>>, how: AmendOptions): Promise<void> {
  await ctx.beginChange();
  const p = plan(ctx, options);
  const start = ctx.parsed().header;
  await ctx.flush();
  if (p.version > start.version) {
    // v2 → v3: the same metadata under a v3 header.
    await writeHeader(ctx, withFeatures(ctx.parsed(), { version: 3, refcountOrder: 4 }));
  }
  const lazyNow = (ctx.parsed().header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
  if (p.lazy !== lazyNow) {
    if (p.lazy && p.version < 3) {
      throw invalid('Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)', 'lazy_refcounts');
    }
    const h = ctx.parsed().header;
    await writeHeader(
      ctx,
      withFeatures(ctx.parsed(), {
        compatibleFeatures: p.lazy ? h.compatibleFeatures | COMPAT_LAZY_REFCOUNTS : h.compatibleFeatures & ~COMPAT_LAZY_REFCOUNTS,
        // Turning lazy refcounts off marks the image clean (refcounts are exact after the flush).
        incompatibleFeatures: p.lazy ? h.incompatibleFeatures : h.incompatibleFeatures & ~INCOMPAT_DIRTY,
      }),
    );
  }
  if (p.refcountOrder !== start.refcountOrder && p.version < 3 && p.refcountOrder !== 4) {
    throw invalid('Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)', 'refcount_bits');
  }
  if (p.dataFile !== null) {
    const parsed = ctx.parsed();
    await writeHeader(ctx, { ...parsed, extensions: { ...parsed.extensions, dataFile: p.dataFile === '' ? null : p.dataFile } });
  }
  if (p.size !== null && p.size !== ctx.img.size) {
    if (p.size % 512 !== 0) throw invalid('The new size must be a multiple of 512', 'size');
    await how.resize(p.size);
  }
  if (p.refcountOrder !== ctx.parsed().header.refcountOrder) {
    await how.bitmaps.saveTracked();
    await ctx.flush();
    how.invalidate();
    await changeRefcountOrder(ctx, p.refcountOrder, how.progress);
  }
  if (p.version < ctx.parsed().header.version) await downgrade(ctx, how);
}

/** compat=0.10 (qcow2_downgrade). */
async function downgrade(ctx: Qcow2MetaContext, how: AmendOptions): Promise<void> {
  const { img } = ctx;
  const h = ctx.parsed().header;
  if (h.refcountOrder !== 4) throw new VdiskError('ENOTSUP', 'compat=0.10 requires refcount_bits=16', { field: 'compat' });
  if (hasDataFile(h)) throw new VdiskError('ENOTSUP', 'Cannot downgrade an image with a data file', { field: 'compat' });
  for (const sn of (await loadSnapshots(ctx)).snapshots) {
    const vmState = sn.vmStateSizeLarge ?? BigInt(sn.vmStateSize);
    if (vmState > 0xffffffffn || (sn.diskSize !== null && sn.diskSize !== BigInt(img.size))) {
      throw new VdiskError('ENOTSUP', 'Internal snapshots prevent downgrade of image', { field: 'compat' });
    }
  }
  // QEMU 7.2 lets the compression type bit pass (a zstd image without compressed clusters stays readable).
  const blocking = h.incompatibleFeatures & ~INCOMPAT_DIRTY & ~INCOMPAT_COMPRESSION;
  if (blocking !== 0n) {
    throw new VdiskError('ENOTSUP', `Cannot downgrade an image with incompatible features 0x${blocking.toString(16)} set`, { field: 'compat' });
  }
  // v2 has no autoclear bits, so bitmaps cannot stay consistent: they go, and their clusters are freed.
  await how.bitmaps.removeAll();
  how.invalidate();
  await expandZeroClusters(ctx, { hasBacking: ctx.parsed().backingFile !== null, progress: how.progress });
  const parsed = ctx.parsed();
  await writeHeader(ctx, {
    ...parsed,
    header: { ...parsed.header, version: 2, incompatibleFeatures: 0n, compatibleFeatures: 0n, autoclearFeatures: 0n, compressionType: 0, refcountOrder: 4 },
    extensions: { ...parsed.extensions, bitmaps: null },
  });
}
