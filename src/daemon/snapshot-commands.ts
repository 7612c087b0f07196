/**
 * blockdev-snapshot-sync and blockdev-snapshot (qapi/block-core.json): an external snapshot of a node
 * in use, the first step of a live backup. A new empty image (qcow2 by
 * default, or a ploop delta) is put over the node's image; the node becomes its
 * backing, frozen at this point in time and durable; every export of the node
 * switches to the new image with no request lost or reordered (Daemon.replace).
 * For a ploop stack opened from a DiskDescriptor.xml the descriptor gains the
 * new top delta, as `ploop snapshot` records it. blockdev-snapshot does the same
 * with an overlay the client created and added (blockdev-add with backing null,
 * as libvirt does); like QEMU it does not write the backing file name into the
 * overlay. Error texts are QEMU's.
 */
import { dirname, relative, resolve } from 'node:path';
import { BlockNode, createImage, openImage, type ImageNode } from '../block/index.js';
import type { FormatName } from '../formats/driver.js';
import { addSnapshot, readDescriptorModel, writeDescriptor } from '../formats/ploop/descriptor-edit.js';
import { readDescriptorText } from '../formats/ploop/stack.js';
import { QmpError, optStr, str, type QmpServer } from '../qmp/index.js';
import type { Daemon } from './daemon.js';
import { unlinkPath } from '../host/fs-calls.js';

type Args = Readonly<Record<string, unknown>>;

/** Formats an overlay can be: raw cannot (it has no backing), as QEMU says. */
const FORMATS: Readonly<Record<string, FormatName>> = { qcow2: 'qcow2', parallels: 'ploop', ploop: 'ploop' };

export function registerSnapshotCommands(qmp: QmpServer, daemon: Daemon): void {
  qmp.register('blockdev-snapshot-sync', {
    params: { 'device?': 'str', 'node-name?': 'str', 'snapshot-file': 'str', 'snapshot-node-name?': 'str', 'format?': 'str', 'mode?': 'str' },
    handler: async (args) => {
      await snapshotSync(daemon, args);
      return {};
    },
  });
  qmp.register('blockdev-snapshot', {
    params: { node: 'str', overlay: 'str' },
    handler: async (args) => {
      await snapshotOnto(daemon, str(args, 'node'), str(args, 'overlay'));
      return {};
    },
  });
}

interface SnapshotPlan {
  readonly top: BlockNode;
  readonly topName: string;
  readonly overlayName: string;
  readonly file: string;
  readonly format: FormatName;
  readonly create: boolean;
  /** The DiskDescriptor.xml the top was opened from, when it is a ploop stack. */
  readonly descriptor: string | undefined;
}

function plan(daemon: Daemon, args: Args): SnapshotPlan {
  const device = optStr(args, 'device');
  const nodeName = optStr(args, 'node-name');
  const wanted = nodeName ?? device ?? '';
  if (!daemon.hasNode(wanted) && !daemon.exports.some((e) => e.id === wanted || e.nodeName === wanted)) {
    throw new QmpError('GenericError', `Cannot find device='${device ?? ''}' nor node-name='${nodeName ?? ''}'`);
  }
  const top = daemon.node(wanted);
  const topName = daemon.nameOf(top) ?? wanted;
  const snapshotNodeName = optStr(args, 'snapshot-node-name');
  if (nodeName !== undefined && snapshotNodeName === undefined) throw new QmpError('GenericError', 'New overlay node-name missing');
  if (snapshotNodeName !== undefined && daemon.hasNode(snapshotNodeName)) throw new QmpError('GenericError', 'New overlay node-name already in use');
  const mode = optStr(args, 'mode') ?? 'absolute-paths';
  if (mode !== 'absolute-paths' && mode !== 'existing') throw new QmpError('GenericError', `Parameter 'mode' does not accept value '${mode}'`);
  const formatName = optStr(args, 'format') ?? 'qcow2';
  const format = FORMATS[formatName];
  if (formatName === 'raw') throw new QmpError('GenericError', "Backing file not supported for file format 'raw'");
  if (!format) throw new QmpError('GenericError', `Unknown file format '${formatName}'`);
  checkSnapshottable(daemon, top, topName);
  const descriptor = stackDescriptor(daemon, top);
  if (descriptor !== undefined && format !== 'ploop') {
    throw new QmpError('GenericError', `The ploop stack described by '${descriptor}' takes only a ploop delta as its snapshot (format 'parallels')`);
  }
  return {
    top,
    topName,
    overlayName: snapshotNodeName ?? daemon.anonymousNodeName(),
    file: resolve(str(args, 'snapshot-file')),
    format,
    create: mode === 'absolute-paths',
    descriptor,
  };
}

async function snapshotSync(daemon: Daemon, args: Args): Promise<void> {
  const p = plan(daemon, args);
  const { top } = p;
  if (p.create) {
    // qcow2 records the old image as its backing file by absolute path (mode absolute-paths);
    // a ploop delta records nothing: its stack is the descriptor (or the graph).
    const backing = p.format === 'qcow2' ? { backingFile: resolve(top.filename), backingFormat: top.format } : {};
    const clusterSize = p.format === 'ploop' && top.format === 'ploop' && top.clusterSize ? { cluster_size: String(top.clusterSize) } : {};
    await createImage(p.file, p.format, { size: top.length, options: clusterSize, ...backing });
  }
  let overlay: BlockNode | null = null;
  try {
    overlay = await openImage(p.file, { format: p.format, noBacking: true });
    if (overlay.length < top.length) throw new QmpError('GenericError', `The overlay '${p.file}' is smaller than the disk it would cover`);
    await overlay.changeBacking(top, { persist: false });
    if (p.descriptor !== undefined) await recordInDescriptor(p.descriptor, p.file);
  } catch (e) {
    await overlay?.closeLayer().catch(() => undefined);
    if (p.create) await unlinkPath(p.file).catch(() => undefined);
    throw e;
  }
  daemon.addNode({
    name: p.overlayName,
    driver: p.format === 'ploop' ? 'parallels' : p.format,
    filename: p.descriptor ?? p.file,
    node: overlay,
    children: [p.topName],
    ownsNode: true,
  });
  await switchExports(daemon, top, overlay, { from: p.topName, to: p.overlayName });
}

/** blockdev-snapshot: `overlayName`, added without a backing, goes over `nodeName`. */
async function snapshotOnto(daemon: Daemon, nodeName: string, overlayName: string): Promise<void> {
  const find = (name: string): string => {
    if (!daemon.hasNode(name)) throw new QmpError('GenericError', `Cannot find device='${name}' nor node-name='${name}'`);
    return name;
  };
  const top = daemon.node(find(nodeName));
  const overlay = daemon.node(find(overlayName));
  checkSnapshottable(daemon, top, nodeName);
  if (daemon.parentOf(overlayName) !== undefined || daemon.exports.some((e) => e.nbd.node === overlay)) throw new QmpError('GenericError', 'The overlay is already in use');
  if (!(overlay instanceof BlockNode)) throw new QmpError('GenericError', `Node '${overlayName}' cannot be an overlay: it is not an image this process opened`);
  if (overlay.backing !== null) throw new QmpError('GenericError', 'The overlay already has a backing image');
  if (overlay.format === 'raw') throw new QmpError('GenericError', "Backing file not supported for file format 'raw'");
  if (overlay.readOnly) throw new QmpError('GenericError', `Node '${overlayName}' is read-only`);
  if (overlay.length < top.length) throw new QmpError('GenericError', `The overlay '${overlay.filename}' is smaller than the disk it would cover`);
  const descriptor = stackDescriptor(daemon, top);
  if (descriptor !== undefined && overlay.format !== 'ploop') {
    throw new QmpError('GenericError', `The ploop stack described by '${descriptor}' takes only a ploop delta as its snapshot (format 'parallels')`);
  }
  await overlay.changeBacking(top, { persist: false });
  if (descriptor !== undefined) await recordInDescriptor(descriptor, overlay.filename);
  daemon.adoptBacking(overlayName, nodeName, descriptor);
  await switchExports(daemon, top, overlay, { from: nodeName, to: overlayName });
}

/** What both commands require of the node to snapshot; returns it as a BlockNode. */
function checkSnapshottable(daemon: Daemon, top: ImageNode, topName: string): asserts top is BlockNode {
  if (!(top instanceof BlockNode)) throw new QmpError('GenericError', `Node '${topName}' cannot take a snapshot: it is not an image this process opened`);
  const parent = daemon.parentOf(topName);
  if (parent !== undefined) throw new QmpError('GenericError', `Node '${topName}' is busy: node is used as backing hd of '${parent}'`);
  if (top.readOnly) throw new QmpError('GenericError', `Node '${topName}' is read-only`);
}

function stackDescriptor(daemon: Daemon, top: ImageNode): string | undefined {
  const source = daemon.sourceFile(top);
  return top.format === 'ploop' && source?.toLowerCase().endsWith('.xml') ? source : undefined;
}

/** Moves the exports of `top` to `overlay` and freezes `top`. */
async function switchExports(daemon: Daemon, top: BlockNode, overlay: BlockNode, names: { readonly from: string; readonly to: string }): Promise<void> {
  // Requests in flight on the old top finish first; later ones go to the overlay.
  await daemon.replace(top, overlay);
  for (const e of daemon.exports) if (e.nbd.node === overlay && e.nodeName === names.from) e.nodeName = names.to;
  // The old top is now a point in time: durable, and read-only as in QEMU (which also lets
  // a backup tool read it). Should the read-only open fail, it stays as it was, flushed.
  await top.reopen({ readOnly: true }).catch(() => top.flush());
}

/** Adds the new delta to the descriptor as its top, the old top kept under a new snapshot GUID. */
async function recordInDescriptor(descriptor: string, file: string): Promise<void> {
  const model = readDescriptorModel(await readDescriptorText(descriptor), descriptor);
  const rel = relative(dirname(resolve(descriptor)), file);
  addSnapshot(model, rel.startsWith('..') ? file : rel);
  await writeDescriptor(descriptor, model);
}
