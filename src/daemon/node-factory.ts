/**
 * blockdev-add: QAPI BlockdevOptions (driver file, raw, qcow2, parallels, nbd)
 * turned into nodes of the Daemon. vdisk's format drivers open their image
 * file themselves, so a `file` node consumed by a format node is closed while
 * the format node exists and reopened when it is deleted.
 */
import { BlockNode, openImage } from '../block/index.js';
import type { ImageNode } from '../block/index.js';
import { VdiskError } from '../errors.js';
import type { CacheMode, FormatName } from '../formats/driver.js';
import { cacheModeOf } from '../formats/cache-mode.js';
import { formatByName } from '../formats/registry.js';
import { NbdDriver, type ClientTls } from '../nbd/index.js';
import type { Daemon, NodeCache, NodeEntry } from './daemon.js';
import { socketAddress } from './socket-address.js';
import { fileProtocolProblem, isFileProtocol } from '../host/file-protocol.js';

type Args = Readonly<Record<string, unknown>>;

/** The options of QEMU's file and host_device drivers. */
const FILE_OPTIONS = ['filename', 'aio', 'locking', 'pr-manager', 'drop-cache', 'x-check-cache-dropped', 'aio-max-batch'];
/** Options every driver accepts; the ones vdisk has no use for are accepted and ignored. */
const COMMON = ['driver', 'node-name', 'read-only', 'auto-read-only', 'force-share', 'cache', 'discard', 'detect-zeroes'];
const BY_DRIVER: Readonly<Record<string, readonly string[]>> = {
  file: FILE_OPTIONS,
  host_device: FILE_OPTIONS,
  raw: ['file', 'offset', 'size'],
  qcow2: ['file', 'backing', 'lazy-refcounts', 'pass-discard-request', 'pass-discard-snapshot', 'pass-discard-other', 'overlap-check', 'cache-size', 'l2-cache-size', 'l2-cache-entry-size', 'refcount-cache-size', 'cache-clean-interval', 'encrypt', 'data-file'],
  parallels: ['file', 'backing'],
  nbd: ['server', 'export', 'tls-creds', 'tls-hostname', 'x-dirty-bitmap', 'reconnect-delay', 'open-timeout'],
};

const FORMAT_OF: Readonly<Record<string, FormatName>> = { qcow2: 'qcow2', parallels: 'ploop' };

export interface NodeFactoryContext {
  readonly daemon: Daemon;
  /** Client TLS credentials by object id (for driver=nbd tls-creds). */
  readonly clientTls?: (id: string) => ClientTls;
}

function fail(message: string, field?: string): never {
  throw new VdiskError('EINVAL', message, field ? { field } : {});
}

function optString(args: Args, key: string): string | undefined {
  const v = args[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') fail(`Invalid parameter type for '${key}', expected: string`, key);
  return v;
}

function optBool(args: Args, key: string): boolean | undefined {
  const v = args[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') fail(`Invalid parameter type for '${key}', expected: boolean`, key);
  return v;
}

/**
 * The node's `cache` (BlockdevCacheOptions: direct, no-flush). A child given
 * inline takes its parent's where it sets none, as QEMU's children inherit
 * cache.direct and cache.no-flush; a child given by name keeps its own.
 */
function cacheOptions(args: Args, inherited: NodeCache | undefined): NodeCache {
  const cache = args['cache'];
  if (cache !== undefined && (typeof cache !== 'object' || cache === null || Array.isArray(cache))) fail("Invalid parameter type for 'cache', expected: object", 'cache');
  const given = (cache ?? {}) as Args;
  for (const key of Object.keys(given)) {
    if (key !== 'direct' && key !== 'no-flush') fail(`Parameter 'cache.${key}' is unexpected`, `cache.${key}`);
  }
  const flag = (key: 'direct' | 'no-flush'): boolean | undefined => {
    const v = given[key];
    if (v !== undefined && typeof v !== 'boolean') fail(`Invalid parameter type for 'cache.${key}', expected: boolean`, `cache.${key}`);
    return v;
  };
  return { direct: flag('direct') ?? inherited?.direct ?? false, noFlush: flag('no-flush') ?? inherited?.noFlush ?? false };
}

/** The cache mode vdisk opens a file with for a node's switches (blockdev nodes keep the write cache on). */
function modeFor(c: NodeCache): CacheMode {
  return cacheModeOf({ ...c, writethrough: false });
}

/** Adds the node described by `args` (and any nodes nested in it); returns its node-name. */
export async function blockdevAdd(ctx: NodeFactoryContext, args: Args): Promise<string> {
  const name = optString(args, 'node-name');
  if (name === undefined) fail("'node-name' must be specified for the root node", 'node-name');
  await addNode(ctx, args, name);
  return name;
}

async function addNode(ctx: NodeFactoryContext, args: Args, name: string, inherited?: NodeCache): Promise<void> {
  const driver = optString(args, 'driver');
  if (driver === undefined) fail("Parameter 'driver' is missing", 'driver');
  const extra = BY_DRIVER[driver];
  if (!extra) fail(`Invalid parameter '${driver}'`, 'driver');
  for (const key of Object.keys(args)) {
    if (!COMMON.includes(key) && !extra.includes(key)) fail(`Parameter '${key}' is unexpected`, key);
  }
  if (ctx.daemon.hasNode(name)) fail(`Duplicate nodes with node-name='${name}'`, 'node-name');
  const readOnly = optBool(args, 'read-only') === true;
  const cache = cacheOptions(args, inherited);
  switch (driver) {
    case 'file':
    case 'host_device': {
      const filename = optString(args, 'filename');
      if (filename === undefined) fail("Parameter 'filename' is missing", 'filename');
      const kind = fileProtocolProblem(driver, filename);
      if (kind !== undefined) fail(kind, 'filename');
      const open = (): Promise<ImageNode> => openImage(filename, { format: 'raw', readOnly, noBacking: true, cache: modeFor(cache) });
      ctx.daemon.addNode({ name, driver, filename, node: await open(), reopen: open, children: [], ownsNode: true, cache });
      return;
    }
    case 'raw': {
      if (args['offset'] !== undefined || args['size'] !== undefined) throw new VdiskError('ENOTSUP', 'raw offset/size are not supported', { field: 'offset' });
      const child = await childNode(ctx, args, 'file', cache);
      // raw over a node is that node's bytes: the raw node shares the child's node (and its cache).
      const node = ctx.daemon.node(child);
      ctx.daemon.addNode({ name, driver, filename: node.filename, node, children: [child], ownsNode: false, cache: ctx.daemon.entry(child).cache ?? cache });
      return;
    }
    case 'qcow2':
    case 'parallels': {
      const format = FORMAT_OF[driver] ?? 'raw';
      const child = await childNode(ctx, args, 'file', cache);
      const fileEntry = ctx.daemon.entry(child);
      if (!isFileProtocol(fileEntry.driver)) throw new VdiskError('ENOTSUP', `${driver} over a '${fileEntry.driver}' node is not supported; give a file node`, { field: 'file' });
      // The format driver opens the file itself: O_DIRECT as the file node has it; a flush that
      // stops at either layer never reaches the disk.
      const fileCache = fileEntry.cache ?? { direct: false, noFlush: false };
      const effective: NodeCache = { direct: fileCache.direct, noFlush: cache.noFlush || fileCache.noFlush };
      const filename = fileEntry.filename;
      const backing = args['backing'];
      let backingName: string | null = null;
      if (backing !== undefined && backing !== null) backingName = await childRef(ctx, backing, 'backing', cache);
      const backingNode = backingName === null ? null : ctx.daemon.node(backingName);
      if (backingNode !== null && !(backingNode instanceof BlockNode)) throw new VdiskError('ENOTSUP', `Node '${backingName}' cannot be a backing node`, { field: 'backing' });
      const detached = await ctx.daemon.detachForParent(child);
      let node: ImageNode;
      try {
        if (backingNode !== null) {
          const drv = await formatByName(format).open(filename, { readOnly, cache: modeFor(effective) });
          node = await BlockNode.attach(drv, { backing: backingNode });
        } else {
          node = await openImage(filename, { format, readOnly, noBacking: backing === null, cache: modeFor(effective) });
        }
      } catch (e) {
        if (detached.reopen) ctx.daemon.addNodeBack(child, await detached.reopen());
        throw e;
      }
      const entry: NodeEntry = { name, driver, filename, node, children: backingName === null ? [child] : [child, backingName], ownsNode: true, cache };
      ctx.daemon.addNode(entry);
      return;
    }
    case 'nbd': {
      const server = args['server'];
      if (typeof server !== 'object' || server === null) fail("Parameter 'server' is missing", 'server');
      const address = socketAddress(server as Args, 'server');
      const exportName = optString(args, 'export') ?? '';
      const tlsId = optString(args, 'tls-creds');
      const tls = tlsId === undefined ? undefined : ctx.clientTls?.(tlsId);
      if (tlsId !== undefined && !tls) fail(`No TLS credentials with id '${tlsId}'`, 'tls-creds');
      const where = 'socketPath' in address ? `nbd+unix:///${exportName}?socket=${address.socketPath}` : `nbd://${address.host}:${address.port}/${exportName}`;
      const drv = await NbdDriver.open({ address, exportName, filename: where, readOnly, ...(tls ? { tls } : {}) });
      ctx.daemon.addNode({ name, driver, filename: where, node: await BlockNode.attach(drv), children: [], ownsNode: true });
      return;
    }
  }
}

/** The node-name of the child `key`: a reference to an existing node, or options of a new, anonymous one. */
async function childNode(ctx: NodeFactoryContext, args: Args, key: string, inherited?: NodeCache): Promise<string> {
  const ref = args[key];
  if (ref === undefined) fail(`Parameter '${key}' is missing`, key);
  return childRef(ctx, ref, key, inherited);
}

async function childRef(ctx: NodeFactoryContext, ref: unknown, key: string, inherited?: NodeCache): Promise<string> {
  if (typeof ref === 'string') {
    ctx.daemon.entry(ref);
    return ref;
  }
  if (typeof ref !== 'object' || ref === null || Array.isArray(ref)) fail(`Invalid parameter type for '${key}', expected: BlockdevRef`, key);
  const nested = ref as Args;
  const nestedName = typeof nested['node-name'] === 'string' ? nested['node-name'] : ctx.daemon.anonymousNodeName();
  await addNode(ctx, nested, nestedName, inherited);
  return nestedName;
}
