/**
 * The QMP commands of qemu-storage-daemon that manage nodes and exports,
 * with its argument names and reply shapes (qapi/block-core.json,
 * qapi/block-export.json).
 */
import { VdiskError } from '../errors.js';
import { isFileProtocol } from '../host/file-protocol.js';
import { QmpError, str, optBool, optInt, optStr, type QmpServer } from '../qmp/index.js';
import type { Daemon, NodeEntry } from './daemon.js';
import { exportBitmaps, registerBitmapCommands } from './bitmap-commands.js';
import type { BitmapInfo } from './named-bitmaps.js';
import { registerTransaction } from './transaction.js';
import { blockdevAdd } from './node-factory.js';
import { registerSnapshotCommands } from './snapshot-commands.js';
import { socketAddress } from './socket-address.js';
import type { TlsObjects } from './tls-objects.js';

export interface DaemonCommandContext {
  readonly daemon: Daemon;
  readonly objects: TlsObjects;
  /** `quit`: called after the reply was sent. */
  readonly quit: () => void;
}

type Args = Readonly<Record<string, unknown>>;

/** Registers blockdev-*, nbd-server-*, block-export-*, query-*, block_resize, object-add and quit on `qmp`. */
export function registerDaemonCommands(qmp: QmpServer, ctx: DaemonCommandContext): void {
  const { daemon, objects } = ctx;
  qmp.register('blockdev-add', {
    handler: async (args) => {
      await blockdevAdd({ daemon, clientTls: (id) => objects.clientTls(id) }, args);
      return {};
    },
  });
  qmp.register('blockdev-del', {
    params: { 'node-name': 'str' },
    handler: async (args) => {
      const name = str(args, 'node-name');
      if (!daemon.hasNode(name)) throw new QmpError('GenericError', `Failed to find node with node-name='${name}'`);
      await daemon.deleteNode(name);
      return {};
    },
  });
  qmp.register('query-named-block-nodes', {
    params: { 'flat?': 'bool' },
    // The newest node first, as QEMU lists them.
    handler: () => Promise.all([...daemon.nodes].reverse().map((e) => blockDeviceInfo(e, e.node ? daemon.bitmaps.list(e.node) : []))),
  });
  qmp.register('nbd-server-start', {
    params: { addr: 'object', 'tls-creds?': 'str', 'tls-authz?': 'str', 'max-connections?': 'int' },
    handler: async (args) => {
      await startServer(ctx, args);
      return {};
    },
  });
  qmp.register('nbd-server-stop', {
    params: {},
    handler: async () => {
      await daemon.stopNbdServer();
      return {};
    },
  });
  qmp.register('block-export-add', {
    params: {
      type: 'str',
      id: 'str',
      'node-name': 'str',
      'writable?': 'bool',
      'writethrough?': 'bool',
      'iothread?': 'str',
      'fixed-iothread?': 'bool',
      'name?': 'str',
      'description?': 'str',
      'bitmaps?': 'any',
      'allocation-depth?': 'bool',
    },
    handler: async (args) => {
      await addExport(daemon, args);
      return {};
    },
  });
  // The export's id is in `key`: 'id' for block-export-del, 'name' for nbd-server-remove (below).
  const removeExport =
    (key: string) =>
    async (args: Args): Promise<Record<string, never>> => {
      const mode = optStr(args, 'mode') ?? 'safe';
      if (mode !== 'safe' && mode !== 'hard') throw new QmpError('GenericError', `Parameter 'mode' does not accept value '${mode}'`);
      await daemon.deleteExport(str(args, key), { hard: mode === 'hard' });
      return {};
    };
  qmp.register('block-export-del', { params: { id: 'str', 'mode?': 'str' }, handler: removeExport('id') });
  // QEMU's older NBD-only pair (deprecated there, still in qemu-storage-daemon 7.2):
  // the export's id is its NBD name, and nbd-server-remove is block-export-del by it.
  qmp.register('nbd-server-add', {
    params: { device: 'str', 'name?': 'str', 'description?': 'str', 'writable?': 'bool', 'bitmap?': 'str' },
    handler: async (args) => {
      if (daemon.nbdServer === null) throw new QmpError('GenericError', 'NBD server not running');
      const device = str(args, 'device');
      // Looked up first, in QEMU's words for this command (block-export-add's differ).
      if (!daemon.hasNode(device)) throw new QmpError('GenericError', `Cannot find device='${device}' nor node-name='${device}'`);
      const name = optStr(args, 'name') ?? device;
      const bitmap = optStr(args, 'bitmap');
      await addExport(daemon, {
        type: 'nbd',
        id: name,
        'node-name': device,
        name,
        writable: optBool(args, 'writable') === true,
        ...(args['description'] !== undefined ? { description: args['description'] } : {}),
        ...(bitmap !== undefined ? { bitmaps: [bitmap] } : {}),
      });
      return {};
    },
  });
  qmp.register('nbd-server-remove', { params: { name: 'str', 'mode?': 'str' }, handler: removeExport('name') });
  qmp.register('query-block-exports', {
    params: {},
    // The newest first, as QEMU lists them.
    handler: () => [...daemon.exports].reverse().map((e) => ({ id: e.id, type: 'nbd', 'node-name': e.nodeName, 'shutting-down': e.shuttingDown })),
  });
  qmp.register('block_resize', {
    params: { 'device?': 'str', 'node-name?': 'str', size: 'int' },
    handler: async (args) => {
      const name = optStr(args, 'node-name') ?? optStr(args, 'device');
      if (name === undefined) throw new QmpError('GenericError', "Need a root block node");
      const size = optInt(args, 'size') ?? 0;
      if (size < 0) throw new QmpError('GenericError', "Parameter 'size' expects a >0 size");
      await daemon.node(name).resize(size);
      return {};
    },
  });
  qmp.register('object-add', {
    handler: (args) => {
      const { 'qom-type': qomType, ...props } = args;
      if (typeof qomType !== 'string') throw new QmpError('GenericError', "Parameter 'qom-type' is missing");
      objects.add(qomType, props);
      return {};
    },
  });
  qmp.register('object-del', {
    params: { id: 'str' },
    handler: (args) => {
      objects.delete(str(args, 'id'));
      return {};
    },
  });
  // qemu-storage-daemon's BlockBackends are its exports', which have no name, so it lists none; neither does vdisk.
  qmp.register('query-block', { params: {}, handler: () => [] });
  registerBitmapCommands(qmp, daemon);
  registerTransaction(qmp, daemon);
  registerSnapshotCommands(qmp, daemon);
  qmp.register('quit', {
    params: {},
    handler: () => {
      // After the reply has been written, as QEMU does.
      setImmediate(ctx.quit);
      return {};
    },
  });
}

/** nbd-server-start (legacy `addr` with `data`) and --nbd-server (flat `addr`). */
export async function startServer(ctx: DaemonCommandContext, args: Args): Promise<void> {
  const addr = args['addr'];
  if (typeof addr !== 'object' || addr === null) throw new QmpError('GenericError', "Parameter 'addr' is missing");
  const tlsId = optStr(args, 'tls-creds');
  if (optStr(args, 'tls-authz') !== undefined) throw new VdiskError('ENOTSUP', 'tls-authz is not supported', { field: 'tls-authz' });
  const maxRaw = args['max-connections'];
  const max = typeof maxRaw === 'string' ? Number(maxRaw) : (optInt(args, 'max-connections') ?? 0);
  if (!Number.isInteger(max) || max < 0 || max > 0xffffffff) throw new QmpError('GenericError', `Parameter 'max-connections' expects uint32`);
  await ctx.daemon.startNbdServer({
    address: socketAddress(addr as Args, 'addr'),
    maxConnections: max,
    ...(tlsId !== undefined ? { tls: ctx.objects.upgrader(tlsId) } : {}),
  });
}

/** block-export-add / --export type=nbd. */
export async function addExport(daemon: Daemon, args: Args): Promise<void> {
  const type = optStr(args, 'type');
  if (type !== 'nbd') throw new QmpError('GenericError', `Parameter 'type' does not accept value '${String(type)}'`);
  const name = optStr(args, 'name');
  const description = optStr(args, 'description');
  const writable = optBool(args, 'writable') === true;
  const bitmaps = await exportBitmaps(daemon, args, str(args, 'node-name'), writable);
  daemon.addExport({
    id: str(args, 'id'),
    nodeName: str(args, 'node-name'),
    writable,
    ...(bitmaps.length > 0 ? { bitmaps } : {}),
    allocationDepth: optBool(args, 'allocation-depth') === true,
    ...(name !== undefined ? { name } : {}),
    ...(description !== undefined ? { description } : {}),
  });
}

/** One BlockDeviceInfo of query-named-block-nodes; `dirty-bitmaps` only where the node has some, as QEMU. */
async function blockDeviceInfo(e: NodeEntry, bitmaps: readonly BitmapInfo[]): Promise<Record<string, unknown>> {
  const node = e.node;
  const image: Record<string, unknown> = { filename: e.filename, format: e.driver };
  let backingDepth = 0;
  if (node) {
    image['virtual-size'] = node.length;
    try {
      const info = await node.info();
      if (info.clusterSize !== undefined) image['cluster-size'] = info.clusterSize;
      if (info.dirtyFlag !== undefined) image['dirty-flag'] = info.dirtyFlag;
      if (info.backing) image['backing-filename'] = info.backing.filename;
      if (info.formatSpecific) image['format-specific'] = info.formatSpecific;
    } catch {
      // Info is best effort: a node that cannot describe itself is still listed.
    }
    backingDepth = isFileProtocol(e.driver) || e.driver === 'raw' ? 0 : node.chain().length - 1;
  }
  return {
    'node-name': e.name,
    drv: e.driver,
    file: e.filename,
    ro: node?.readOnly ?? false,
    encrypted: false,
    ...(node?.backing ? { backing_file: node.backing.filename } : {}),
    backing_file_depth: backingDepth,
    detect_zeroes: 'off',
    bps: 0,
    bps_rd: 0,
    bps_wr: 0,
    iops: 0,
    iops_rd: 0,
    iops_wr: 0,
    write_threshold: 0,
    cache: { writeback: true, direct: e.cache?.direct ?? false, 'no-flush': e.cache?.noFlush ?? false },
    ...(bitmaps.length > 0 ? { 'dirty-bitmaps': bitmaps } : {}),
    image,
  };
}
