/**
 * Opening an image and its backing chain.
 *
 * Format decisions (QEMU's rules, see block.c find_image_format and
 * raw-format.c):
 * - a format given by the caller is never second-guessed;
 * - otherwise the first bytes are probed: qcow2 by its magic, ploop by its
 *   signature, else raw. A top image probed as raw is marked so that writes
 *   which would make its first sector probe as another format are refused
 *   (BlockNode's probedRaw guard): a guest cannot make its raw disk turn into
 *   a qcow2 naming a host file as backing on the next open;
 * - a backing file opens with the format recorded in the overlay when there is
 *   one (a backing recorded as raw stays raw), else probed as QEMU does.
 *
 * Backing names resolve relative to the overlay's directory; backing files
 * open read-only; a file that appears twice in the chain (same device and
 * inode) is a loop and is refused.
 */
import { dirname, isAbsolute, join } from 'node:path';
import { VdiskError } from '../errors.js';
import type { BlockDriver, FormatName } from '../formats/driver.js';
import { formatByName, PROBE_SIZE, probeFormat } from '../formats/registry.js';
import type { DriverOpenOptions, FormatModule } from '../formats/registry-types.js';
import { ImageLock, closingWithLock, imageLockRequest } from '../host/image-lock.js';
import { NodeHostFile } from '../host/node-file.js';
import { BlockNode } from './node.js';
import type { OpenOptions } from './types.js';
import { statBig } from '../host/fs-calls.js';

/** A chain longer than this is refused rather than opened (QEMU has no fixed limit; this bounds resources). */
const MAX_CHAIN = 1000;

/** Backing names with these prefixes are remote or structured; vdisk cannot open them yet. */
const PROTOCOL = /^(json|nbd|nbd\+unix|nbd\+tcp|nbds|http|https|ftp|ftps|ssh|iscsi|rbd|gluster|nfs):/;

const SYSTEM_MESSAGES: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  ELOOP: 'Too many levels of symbolic links',
  EROFS: 'Read-only file system',
};

function systemMessage(e: unknown): string {
  const code = typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '';
  if (e instanceof VdiskError) {
    const cause = e.cause;
    const causeCode = typeof cause === 'object' && cause !== null && 'code' in cause ? String((cause as { code: unknown }).code) : '';
    return SYSTEM_MESSAGES[causeCode] ?? e.message;
  }
  return SYSTEM_MESSAGES[code] ?? (e instanceof Error ? e.message : String(e));
}

function errorCodeOf(e: unknown): 'ENOENT' | 'EPERM' | 'EIO' {
  const code = typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '';
  if (code === 'ENOENT') return 'ENOENT';
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return 'EPERM';
  return 'EIO';
}

/** The device:inode of a file, which identifies it whatever name it is reached by. */
async function identityOf(path: string): Promise<string> {
  const st = await statBig(path);
  return `${st.dev}:${st.ino}`;
}

/** Where openImage finds format modules; tests substitute their own. */
export interface FormatTable {
  byName(name: string): FormatModule;
  probe(head: Uint8Array): FormatName;
}

const REGISTRY: FormatTable = { byName: formatByName, probe: probeFormat };

/** Reads the head of a file and decides its format. */
async function probeFile(path: string, formats: FormatTable): Promise<FormatName> {
  const host = await NodeHostFile.open(path, { readOnly: true });
  try {
    const head = new Uint8Array(PROBE_SIZE);
    await host.read(head, 0);
    return formats.probe(head);
  } finally {
    await host.close();
  }
}

/** The path a backing reference names, as QEMU resolves it against the overlay's path. */
export function resolveBackingPath(overlayPath: string, reference: string): string {
  const name = reference.startsWith('file:') ? reference.slice('file:'.length) : reference;
  return isAbsolute(name) ? name : join(dirname(overlayPath), name);
}

interface OpenedLayer {
  readonly driver: BlockDriver;
  readonly probedRaw: boolean;
}

interface LayerRequest {
  readonly path: string;
  readonly format: FormatName | undefined;
  readonly options: DriverOpenOptions;
  /** Where a warning goes (the lock could not be taken); none: silent. */
  readonly warn?: ((message: string) => void) | undefined;
}

async function openLayer(request: LayerRequest, formats: FormatTable): Promise<OpenedLayer> {
  const { path, format, options } = request;
  const chosen = format ?? (await probeFile(path, formats));
  let module;
  try {
    module = formats.byName(chosen);
  } catch {
    throw new VdiskError('ENOTSUP', `Cannot open '${path}': format '${chosen}' is not supported by this build`, { file: path, field: 'format' });
  }
  // QEMU's image locks (host/image-lock.ts): taken before the driver opens, released when it closes.
  const lock = await ImageLock.acquire(path, imageLockRequest({ readOnly: options.readOnly, metadataFormat: chosen !== 'raw', forceShare: options.forceShare === true }));
  if (!lock.supported) request.warn?.(`warning: Cannot lock '${path}': the file system does not support byte-range locks; continuing without image locking`);
  let driver: BlockDriver;
  try {
    driver = await module.open(path, options);
  } catch (e) {
    await lock.release();
    throw e;
  }
  return { driver: lock.supported ? closingWithLock(driver, lock) : driver, probedRaw: format === undefined && chosen === 'raw' };
}

/**
 * Opens the image at `path` and, unless `options.noBacking`, its whole backing
 * chain. The returned node is the top; close it to close the chain.
 *
 * @example
 * ```ts
 * import { openImage } from 'vdisk';
 * const disk = await openImage('disk.qcow2', { readOnly: true });
 * const buf = new Uint8Array(512);
 * await disk.read(0, buf);
 * await disk.close();
 * ```
 */
export function openImage(path: string, options: OpenOptions = {}): Promise<BlockNode> {
  return openImageWith(path, options, REGISTRY);
}

/** openImage with the format modules taken from `formats` (for tests and embedders). */
export async function openImageWith(path: string, options: OpenOptions, formats: FormatTable): Promise<BlockNode> {
  const topOptions: DriverOpenOptions = {
    readOnly: options.readOnly ?? false,
    ...(options.cache !== undefined ? { cache: options.cache } : {}),
    ...(options.forceShare !== undefined ? { forceShare: options.forceShare } : {}),
    ...(options.noRepair !== undefined ? { noRepair: options.noRepair } : {}),
    ...(options.inlineIo !== undefined ? { inlineIo: options.inlineIo } : {}),
  };
  const backingOptions: DriverOpenOptions = { ...topOptions, readOnly: true };
  const topLayerOptions: DriverOpenOptions = { ...topOptions, ...(options.qcow2Tuning !== undefined ? { qcow2Tuning: options.qcow2Tuning } : {}) };
  const layers: OpenedLayer[] = [];
  try {
    try {
      await statBig(path);
    } catch (e) {
      throw new VdiskError(errorCodeOf(e), `Could not open '${path}': ${systemMessage(e)}`, { file: path }, { cause: e });
    }
    const seen = new Map<string, string>([[await identityOf(path), path]]);
    layers.push(await openLayer({ path, format: options.format, options: topLayerOptions, warn: options.onWarning }, formats));
    for (let top = layers[0]; top && !options.noBacking; ) {
      const ref = top.driver.backingRef;
      if (!ref) break;
      const overlay = top.driver.filename;
      if (PROTOCOL.test(ref.filename)) {
        throw new VdiskError('ENOTSUP', `Could not open backing file '${ref.filename}' of '${overlay}': protocol not supported`, {
          file: overlay,
          field: 'backing_file',
        });
      }
      if (layers.length >= MAX_CHAIN) {
        throw new VdiskError('EINVAL', `Backing chain of '${path}' is longer than ${MAX_CHAIN} images`, { file: path });
      }
      const backingPath = resolveBackingPath(overlay, ref.filename);
      let identity: string;
      try {
        identity = await identityOf(backingPath);
      } catch (e) {
        throw new VdiskError(errorCodeOf(e), `Could not open backing file '${backingPath}' of '${overlay}': ${systemMessage(e)}`, {
          file: overlay,
          field: 'backing_file',
        }, { cause: e });
      }
      const earlier = seen.get(identity);
      if (earlier !== undefined) {
        throw new VdiskError('EINVAL', `Backing file '${backingPath}' of '${overlay}' is '${earlier}' again: the backing chain is a loop`, {
          file: overlay,
          field: 'backing_file',
        });
      }
      seen.set(identity, backingPath);
      let layer: OpenedLayer;
      try {
        layer = top.driver.openBacking
          ? { driver: await top.driver.openBacking(backingOptions), probedRaw: false }
          : await openLayer({ path: backingPath, format: ref.format ?? undefined, options: backingOptions, warn: options.onWarning }, formats);
      } catch (e) {
        throw new VdiskError(
          e instanceof VdiskError ? e.code : 'EIO',
          `Could not open backing file '${backingPath}' of '${overlay}': ${e instanceof Error ? e.message : String(e)}`,
          { file: overlay, field: 'backing_file' },
          { cause: e },
        );
      }
      // The backing node is never written through the chain; only the top probe guard matters.
      layers.push({ driver: layer.driver, probedRaw: false });
      top = layer;
    }
    let below: BlockNode | null = null;
    for (let i = layers.length - 1; i >= 0; i--) {
      const layer = layers[i];
      if (!layer) continue;
      below = await BlockNode.attach(layer.driver, { backing: below, probedRaw: layer.probedRaw });
    }
    if (!below) throw new VdiskError('EIO', `Could not open '${path}'`, { file: path });
    return below;
  } catch (e) {
    for (const layer of layers.reverse()) {
      await layer.driver.close().catch(() => undefined);
    }
    throw e;
  }
}
