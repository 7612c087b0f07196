/**
 * QMP commands of the block jobs, with qemu-storage-daemon's names, arguments
 * and replies (qapi/block-core.json, qapi/job.json): block-commit,
 * block-stream, blockdev-mirror, drive-mirror, job-*, block-job-*,
 * query-jobs, query-block-jobs. Job events go out through `qmp.emitEvent`.
 */
import { BlockNode, createImage, openImage, type ImageNode } from '../block/index.js';
import { VdiskError } from '../errors.js';
import type { FormatName } from '../formats/driver.js';
import {
  BlockCopyJob,
  CommitJob,
  MirrorJob,
  ON_ERROR_VALUES,
  PloopBackwardMerge,
  PloopForwardMerge,
  StreamJob,
  type Job,
  type JobOptions,
  type MirrorSync,
  type OnError,
} from '../jobs/index.js';
import { optBool, optInt, optStr, QmpError, str, type QmpServer } from '../qmp/index.js';
import type { NodeGraph } from './graph.js';
import { JobRegistry } from './job-registry.js';

type Args = Readonly<Record<string, unknown>>;

const COMMON_JOB_PARAMS = { 'job-id?': 'str', 'speed?': 'int', 'auto-finalize?': 'bool', 'auto-dismiss?': 'bool', 'filter-node-name?': 'str' } as const;

/** Registers the job commands on `qmp`; returns the registry (the daemon awaits `cancelAll()` before closing nodes). */
export function registerJobCommands(qmp: QmpServer, graph: NodeGraph): JobRegistry {
  const jobs = new JobRegistry(graph, (e) => qmp.emitEvent(e.event, e.data));

  qmp.register('block-commit', {
    params: { ...COMMON_JOB_PARAMS, device: 'str', 'base-node?': 'str', 'base?': 'str', 'top-node?': 'str', 'top?': 'str', 'backing-file?': 'str', 'on-error?': 'str', 'backing-mask-protocol?': 'bool' },
    handler: (args) => {
      startCommit(jobs, graph, args);
      return {};
    },
  });
  qmp.register('block-stream', {
    params: { ...COMMON_JOB_PARAMS, device: 'str', 'base?': 'str', 'base-node?': 'str', 'bottom?': 'str', 'backing-file?': 'str', 'on-error?': 'str', 'backing-mask-protocol?': 'bool' },
    handler: (args) => {
      startStream(jobs, graph, args);
      return {};
    },
  });
  const mirrorParams = {
    ...COMMON_JOB_PARAMS,
    device: 'str',
    target: 'str',
    'replaces?': 'str',
    sync: 'str',
    'granularity?': 'int',
    'buf-size?': 'int',
    'on-source-error?': 'str',
    'on-target-error?': 'str',
    'copy-mode?': 'str',
  } as const;
  qmp.register('blockdev-mirror', {
    params: mirrorParams,
    handler: (args) => {
      startMirror(jobs, graph, { args, target: graph.node(str(args, 'target')), targetIsZero: false });
      return {};
    },
  });
  qmp.register('drive-mirror', {
    params: { ...mirrorParams, 'format?': 'str', 'node-name?': 'str', 'mode?': 'str', 'unmap?': 'bool' },
    handler: async (args) => {
      await driveMirror(jobs, graph, args);
      return {};
    },
  });

  const byId = (verb: (job: Job) => void) => ({
    params: { id: 'str' } as const,
    handler: (args: Args) => {
      verb(jobs.get(str(args, 'id')));
      return {};
    },
  });
  qmp.register('job-pause', byId((j) => j.pause()));
  qmp.register('job-resume', byId((j) => j.resume()));
  qmp.register('job-cancel', byId((j) => j.cancel(true)));
  qmp.register('job-complete', byId((j) => j.complete()));
  qmp.register('job-finalize', byId((j) => j.finalize()));
  qmp.register('job-dismiss', byId((j) => j.dismiss()));
  qmp.register('block-job-finalize', byId((j) => j.finalize()));
  qmp.register('block-job-dismiss', byId((j) => j.dismiss()));

  const byDevice = (verb: (job: Job, args: Args) => void, extra: Readonly<Record<string, 'int' | 'bool'>> = {}) => ({
    params: { device: 'str', ...extra } as const,
    handler: (args: Args) => {
      verb(blockJob(jobs, str(args, 'device')), args);
      return {};
    },
  });
  qmp.register('block-job-pause', byDevice((j) => j.pause()));
  qmp.register('block-job-resume', byDevice((j) => j.resume()));
  qmp.register('block-job-complete', byDevice((j) => j.complete()));
  qmp.register('block-job-cancel', byDevice((j, a) => j.cancel(optBool(a, 'force') ?? false), { 'force?': 'bool' }));
  qmp.register('block-job-set-speed', byDevice((j, a) => j.setSpeed(optInt(a, 'speed') ?? 0), { speed: 'int' }));

  qmp.register('query-jobs', { params: {}, handler: () => jobs.jobs.map((j) => j.info()) });
  qmp.register('query-block-jobs', { params: {}, handler: () => jobs.jobs.filter((j) => j.status !== 'concluded' || !j.autoDismiss).map(blockJobInfo) });
  return jobs;
}

/** QEMU's find_block_job: a DeviceNotActive error when there is none. */
function blockJob(jobs: JobRegistry, id: string): Job {
  const job = jobs.find(id);
  if (!job) throw new QmpError('DeviceNotActive', `Block job '${id}' not found`);
  return job;
}

/** QMP's BlockJobInfo. */
export function blockJobInfo(job: Job): Record<string, unknown> {
  const info: Record<string, unknown> = {
    type: job.type,
    device: job.id,
    len: job.len,
    offset: job.offset,
    busy: job.busy,
    paused: job.paused,
    speed: job.speed,
    'io-status': job instanceof BlockCopyJob ? job.ioStatus : 'ok',
    ready: job.ready,
    status: job.status,
    'auto-finalize': job.autoFinalize,
    'auto-dismiss': job.autoDismiss,
  };
  if (job.error !== undefined) info['error'] = job.error;
  if (job instanceof MirrorJob) info['actively-synced'] = job.activelySynced;
  return info;
}

function jobOptions(args: Args, defaultId: string): JobOptions {
  const speed = optInt(args, 'speed');
  if (speed !== undefined && speed < 0) throw new QmpError('GenericError', "Parameter 'speed' expects a non-negative value");
  const autoFinalize = optBool(args, 'auto-finalize');
  const autoDismiss = optBool(args, 'auto-dismiss');
  return {
    id: optStr(args, 'job-id') ?? defaultId,
    ...(speed !== undefined ? { speed } : {}),
    ...(autoFinalize !== undefined ? { autoFinalize } : {}),
    ...(autoDismiss !== undefined ? { autoDismiss } : {}),
  };
}

function onError(args: Args, key: string): OnError | undefined {
  const v = optStr(args, key);
  if (v === undefined) return undefined;
  if (!(ON_ERROR_VALUES as readonly string[]).includes(v)) throw new QmpError('GenericError', `Parameter '${key}' does not accept value '${v}'`);
  return v as OnError;
}

function enumArg<T extends string>(args: Args, key: string, values: readonly T[]): T | undefined {
  const v = optStr(args, key);
  if (v === undefined) return undefined;
  if (!(values as readonly string[]).includes(v)) throw new QmpError('GenericError', `Parameter '${key}' does not accept value '${v}'`);
  return v as T;
}

/** A node the jobs can watch (a BlockNode, not a remote or exotic node). */
function sourceBlockNode(graph: NodeGraph, name: string, role: string): BlockNode {
  const node = graph.node(name);
  if (!(node instanceof BlockNode)) throw new VdiskError('ENOTSUP', `Node '${name}' cannot be used as the ${role} of a block job`, { field: role });
  return node;
}

/** A node of `chain` chosen by node-name or by filename (QMP's top/base). */
function chainMember(graph: NodeGraph, chain: readonly BlockNode[], pick: { readonly node?: string | undefined; readonly file?: string | undefined; readonly what: string }): BlockNode | undefined {
  if (pick.node !== undefined && pick.file !== undefined) throw new QmpError('GenericError', `'${pick.what}' and '${pick.what}-node' are mutually exclusive`);
  if (pick.node !== undefined) {
    const n = graph.node(pick.node);
    const found = chain.find((c) => c === n);
    if (!found) throw new QmpError('GenericError', `'${pick.node}' is not in this backing file chain`);
    return found;
  }
  if (pick.file !== undefined) {
    const found = chain.find((c) => c.filename === pick.file);
    if (!found) throw new QmpError('GenericError', `Can't find '${pick.file}' in the backing chain`);
    return found;
  }
  return undefined;
}

function startCommit(jobs: JobRegistry, graph: NodeGraph, args: Args): void {
  const device = str(args, 'device');
  const active = sourceBlockNode(graph, device, 'device');
  const chain = active.chain();
  const top = chainMember(graph, chain, { node: optStr(args, 'top-node'), file: optStr(args, 'top'), what: 'top' }) ?? active;
  const base = chainMember(graph, chain, { node: optStr(args, 'base-node'), file: optStr(args, 'base'), what: 'base' });
  if (!top.backing) throw new QmpError('GenericError', `Top image file ${top.filename} has no backing file`);
  if (base === top) throw new QmpError('GenericError', 'cannot commit an image into itself');
  const isActive = top === active;
  const overlay = isActive ? null : (chain.find((n) => n.backing === top) ?? null);
  const backingFile = optStr(args, 'backing-file');
  if (isActive && backingFile !== undefined) throw new QmpError('GenericError', "'backing-file' cannot be specified for an active commit");
  const sourceError = onError(args, 'on-error');
  const common = {
    ...jobOptions(args, device),
    ...(sourceError ? { onSourceError: sourceError, onTargetError: sourceError } : {}),
  };
  // The old top and the images above base leave the graph (QEMU drops the committed nodes).
  const pivot = (from: ImageNode, to: ImageNode): Promise<void> => graph.replace(from, to, { dropFrom: true });
  const descriptor = ploopDescriptor(graph, active);
  let job: CommitJob;
  if (top.format === 'ploop' && isActive && (base === undefined || base === top.backing)) {
    // A ploop stack's backward merge: the top delta into the one below, and the descriptor rewritten.
    job = new PloopBackwardMerge({ ...common, top, direction: 'backward', pivot, ...(descriptor !== undefined ? { descriptor } : {}) });
  } else {
    if (descriptor !== undefined) {
      throw new QmpError('GenericError', `A ploop stack described by '${descriptor}' merges only its top delta into the one below (block-commit) or a delta up into the top (block-stream)`);
    }
    job = new CommitJob({ ...common, top, ...(base ? { base } : {}), active: isActive, overlay, ...(backingFile !== undefined ? { backingFile } : {}), pivot });
  }
  jobs.start(job, [...job.top.chain().slice(0, job.top.chain().indexOf(job.base) + 1), ...(overlay ? [overlay] : []), ...(isActive ? [] : [active])]);
}

function startStream(jobs: JobRegistry, graph: NodeGraph, args: Args): void {
  const device = str(args, 'device');
  const top = sourceBlockNode(graph, device, 'device');
  const chain = top.chain();
  let base = chainMember(graph, chain, { node: optStr(args, 'base-node'), file: optStr(args, 'base'), what: 'base' }) ?? null;
  const bottom = optStr(args, 'bottom');
  if (bottom !== undefined) {
    if (base) throw new QmpError('GenericError', "'base' and 'bottom' cannot be specified at the same time");
    const b = chainMember(graph, chain, { node: bottom, what: 'bottom' });
    base = b?.backing ?? null;
  }
  if (base === top) throw new QmpError('GenericError', 'cannot stream an image into itself');
  const backingFile = optStr(args, 'backing-file');
  const sourceError = onError(args, 'on-error');
  const descriptor = ploopDescriptor(graph, top);
  if (descriptor !== undefined) {
    startPloopForwardMerge(jobs, { args, top, base, descriptor });
    return;
  }
  const job = new StreamJob({
    ...jobOptions(args, device),
    top,
    base,
    ...(backingFile !== undefined ? { backingFile } : {}),
    ...(sourceError ? { onSourceError: sourceError, onTargetError: sourceError } : {}),
  });
  const held = base ? chain.slice(0, chain.indexOf(base)) : chain;
  jobs.start(job, held);
}

/** The DiskDescriptor.xml a ploop node was added from, if it was. */
function ploopDescriptor(graph: NodeGraph, node: ImageNode): string | undefined {
  if (node.format !== 'ploop') return undefined;
  const file = graph.sourceFile(node);
  return file !== undefined && file.toLowerCase().endsWith('.xml') ? file : undefined;
}

/**
 * block-stream on a ploop stack from a DiskDescriptor.xml is the forward
 * merge: the delta just below the top is merged up into the top (so `base`,
 * when given, must be the delta below that one), the descriptor is rewritten
 * and the merged delta's file deleted. Like any stream it has no ready phase.
 */
function startPloopForwardMerge(
  jobs: JobRegistry,
  request: { readonly args: Args; readonly top: BlockNode; readonly base: BlockNode | null; readonly descriptor: string },
): void {
  const { args, top, base, descriptor } = request;
  const chain = top.chain();
  if (chain.length < 2) throw new QmpError('GenericError', `'${descriptor}' has no delta below the top to merge`);
  if (base !== null && base !== chain[2]) {
    throw new QmpError('GenericError', `A ploop forward merge takes one delta at a time: 'base' must be the delta below '${chain[1]?.filename ?? ''}'`);
  }
  const sourceError = onError(args, 'on-error');
  const job = new PloopForwardMerge({
    ...jobOptions(args, str(args, 'device')),
    ...(sourceError ? { onSourceError: sourceError, onTargetError: sourceError } : {}),
    top,
    direction: 'forward',
    depth: 1,
    descriptor,
    autoComplete: true,
    jobType: 'stream',
  });
  jobs.start(job, chain.slice(0, 2));
}

const SYNC_VALUES: readonly MirrorSync[] = ['full', 'top', 'none'];

function startMirror(jobs: JobRegistry, graph: NodeGraph, request: { readonly args: Args; readonly target: ImageNode; readonly targetIsZero: boolean }): MirrorJob {
  const { args, target } = request;
  const device = str(args, 'device');
  const source = sourceBlockNode(graph, device, 'device');
  const sync = enumArg(args, 'sync', SYNC_VALUES);
  if (!sync) throw new QmpError('GenericError', "Parameter 'sync' does not accept value '" + String(args['sync']) + "'");
  const granularity = optInt(args, 'granularity');
  if (granularity !== undefined && (granularity < 512 || granularity > 64 * 1024 * 1024 || (granularity & (granularity - 1)) !== 0)) {
    throw new QmpError('GenericError', 'Parameter \'granularity\' expects a power of 2 between 512 and 64M');
  }
  const bufSize = optInt(args, 'buf-size');
  if (bufSize !== undefined && bufSize < 0) throw new QmpError('GenericError', "Parameter 'buf-size' expects a non-negative value");
  const copyMode = enumArg(args, 'copy-mode', ['background', 'write-blocking'] as const);
  const srcErr = onError(args, 'on-source-error');
  const tgtErr = onError(args, 'on-target-error');
  const replaces = optStr(args, 'replaces');
  const replaced = replaces !== undefined ? graph.node(replaces) : source;
  const job = new MirrorJob({
    ...jobOptions(args, device),
    source,
    target,
    sync,
    ...(granularity !== undefined ? { granularity } : {}),
    ...(bufSize !== undefined ? { bufSize } : {}),
    ...(copyMode ? { copyMode } : {}),
    ...(srcErr ? { onSourceError: srcErr } : {}),
    ...(tgtErr ? { onTargetError: tgtErr } : {}),
    targetIsZero: request.targetIsZero,
    pivot: (_from, to) => graph.replace(replaced, to),
  });
  jobs.start(job, [source, target]);
  return job;
}

/** drive-mirror: creates the target image (mode absolute-paths) or opens it (existing), then mirrors. */
async function driveMirror(jobs: JobRegistry, graph: NodeGraph, args: Args): Promise<void> {
  const device = str(args, 'device');
  const source = sourceBlockNode(graph, device, 'device');
  const path = str(args, 'target');
  const mode = enumArg(args, 'mode', ['absolute-paths', 'existing'] as const) ?? 'absolute-paths';
  const sync = enumArg(args, 'sync', SYNC_VALUES);
  const format = (optStr(args, 'format') ?? source.format) as FormatName;
  const id = optStr(args, 'job-id') ?? device;
  jobs.checkFree(id, [source]);
  let targetIsZero = false;
  if (mode === 'absolute-paths') {
    const backing = sync === 'top' ? source.backing : null;
    await createImage(path, format, {
      size: source.length,
      options: {},
      ...(backing ? { backingFile: backing.filename, backingFormat: backing.format } : {}),
    });
    targetIsZero = backing === null;
  }
  const target = await openImage(path, { format });
  const targetName = optStr(args, 'node-name') ?? `#${id}-target`;
  graph.add(targetName, target);
  let job: Job;
  try {
    job = startMirror(jobs, graph, { args, target, targetIsZero });
  } catch (e) {
    await graph.deleteNode(targetName).catch(() => undefined);
    throw e;
  }
  // QEMU drops drive-mirror's target unless the job switched the device over to it.
  job.onEvent((e) => {
    if (e.event === 'BLOCK_JOB_CANCELLED' || (e.event === 'BLOCK_JOB_COMPLETED' && e.data.error !== undefined)) {
      queueMicrotask(() => void graph.deleteNode(targetName).catch(() => undefined));
    }
  });
}
