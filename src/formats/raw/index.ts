/** The raw format module: a disk image that is just the bytes of the disk. */
import { VdiskError } from '../../errors.js';
import { DirectHostFile } from '../../host/direct-file.js';
import { NodeHostFile } from '../../host/node-file.js';
import { cachePolicy, withoutSync } from '../cache-mode.js';
import { alignUp } from '../../util/size.js';
import type { BlockDriver } from '../driver.js';
import type { CreateOptions, DriverOpenOptions, FormatModule } from '../registry-types.js';
import { preallocateRange, parseRawPreallocation } from './preallocation.js';
import { RawDriver } from './raw-driver.js';

export { RawDriver } from './raw-driver.js';

/** Options QEMU's raw/file drivers accept at create time (nocow and extent_size_hint are accepted and ignored). */
const CREATE_OPTIONS = new Set(['size', 'preallocation', 'nocow', 'extent_size_hint']);

async function openRaw(path: string, options: DriverOpenOptions): Promise<BlockDriver> {
  const policy = cachePolicy(options.cache);
  // writethrough/directsync: O_DSYNC makes every write durable; unsafe: flush never syncs.
  const opened = policy.direct
    ? await DirectHostFile.openDirect(path, { readOnly: options.readOnly, direct: true, dsync: policy.flushEachWrite })
    : await NodeHostFile.open(path, { readOnly: options.readOnly, dsync: policy.flushEachWrite, inlineIo: options.inlineIo ?? false });
  const host = policy.syncOnFlush ? opened : withoutSync(opened);
  try {
    return await RawDriver.fromHost(host);
  } catch (e) {
    await host.close();
    throw e;
  }
}

/**
 * Creates (or empties) `path` as a raw image of `options.size` bytes, rounded up
 * to 512 like qemu-img create.
 */
async function createRaw(path: string, options: CreateOptions): Promise<void> {
  for (const key of Object.keys(options.options)) {
    if (!CREATE_OPTIONS.has(key)) throw new VdiskError('EINVAL', `${path}: Invalid parameter '${key}'`, { file: path, field: key });
  }
  if (options.backingFile !== undefined) {
    throw new VdiskError('ENOTSUP', `${path}: Backing file not supported for file format 'raw'`, { file: path, field: 'backing_file' });
  }
  const mode = parseRawPreallocation(options.options['preallocation'], path);
  if (!Number.isSafeInteger(options.size) || options.size < 0) {
    throw new VdiskError('EINVAL', `${path}: Invalid image size ${options.size}`, { file: path, field: 'size' });
  }
  const size = alignUp(options.size, 512);
  const host = await NodeHostFile.open(path, { create: true, truncate: true });
  try {
    // A device keeps its size and its contents (QEMU's host_device does no preallocation either).
    if (host.device && mode !== 'off') throw new VdiskError('ENOTSUP', `Unsupported preallocation mode '${mode}'`, { file: path, field: 'preallocation' });
    await host.truncate(size);
    if (!host.device) await preallocateRange(host, { from: 0, to: size, mode });
    await host.sync();
  } finally {
    await host.close();
  }
}

export const rawFormat: FormatModule = {
  name: 'raw',
  // Raw is what remains when no other format recognises the file.
  probe: () => false,
  open: openRaw,
  create: createRaw,
};
