/**
 * Rewriting the backing reference of a qcow2 image (what `qemu-img rebase`
 * ends with, qcow2_change_backing_file): the backing file name and the
 * backing format extension change, the whole header cluster is rewritten in
 * one write and synced. Data is not touched.
 */
import { VdiskError } from '../../errors.js';
import type { BackingReference } from '../driver.js';
import { parseHeaderCluster, serializeHeaderCluster } from './header.js';
import type { Qcow2MetaContext } from './meta-context.js';

/** QEMU refuses longer backing names (qcow2.txt: backing_file_size at most 1023). */
const MAX_BACKING_NAME = 1023;

/** The format name written into the header: QEMU calls ploop "parallels". */
function headerFormatName(format: string | null): string | null {
  return format === 'ploop' ? 'parallels' : format;
}

/** Sets (or with null, removes) the backing reference of an opened, writable image. */
export async function changeBackingQcow2(ctx: Qcow2MetaContext, ref: BackingReference | null): Promise<void> {
  const file = ctx.img.file;
  if (ref !== null && Buffer.byteLength(ref.filename) > MAX_BACKING_NAME) {
    throw new VdiskError('EINVAL', `Cannot set the backing file of '${file}': the name is longer than ${MAX_BACKING_NAME} bytes`, { file, field: 'backing_file' });
  }
  if (ref !== null && ctx.img.geometry.externalDataFile && ctx.img.dataFileRaw) {
    throw new VdiskError('EINVAL', `Cannot set the backing file of '${file}': it has a raw external data file`, { file, field: 'backing_file' });
  }
  await ctx.beginChange();
  await ctx.flush();
  const parsed = ctx.parsed();
  const next = {
    ...parsed,
    backingFile: ref === null ? null : ref.filename,
    extensions: { ...parsed.extensions, backingFormat: ref === null ? null : headerFormatName(ref.format) },
  };
  const cluster0 = serializeHeaderCluster(next, ctx.img.clusterSize);
  await ctx.img.host.write(cluster0, 0);
  await ctx.img.host.sync();
  ctx.setParsed(parseHeaderCluster(cluster0, { file, fileSize: await ctx.img.host.size() }));
}
