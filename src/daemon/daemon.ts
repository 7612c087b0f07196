/**
 * The managed serving process (qemu-storage-daemon's model): named block
 * nodes, one NBD server with many exports, and the NodeGraph the job commands
 * work through. State lives in the instance; one process may hold several.
 *
 * Order on shutdown: stop the NBD server (in-flight requests are answered),
 * tell release listeners (jobs cancel), then flush and close every node, top
 * nodes before the nodes they consume.
 */
import * as fs from 'node:fs';
import type { DirtyBitmap } from '../block/dirty-bitmap.js';
import type { ImageNode } from '../block/index.js';
import { VdiskError } from '../errors.js';
import { NbdServer, type ListenAddress, type NbdExport, type TlsUpgrader } from '../nbd/index.js';
import type { NodeGraph, ReleaseReason, ReplaceOptions } from './graph.js';
import { NamedBitmaps } from './named-bitmaps.js';

/** One named node of the graph. */
export interface NodeEntry {
  readonly name: string;
  /** The QAPI driver name it was added with (file, raw, qcow2, parallels, nbd). */
  readonly driver: string;
  /** The image file (or NBD URI) behind the node, shown by query-named-block-nodes. */
  readonly filename: string;
  /**
   * The opened node; null while a format node above owns the file (a file
   * node consumed by qcow2 is closed so that only the format driver has it open).
   */
  readonly node: ImageNode | null;
  /** Opens the node again once the format node that consumed it is deleted. */
  readonly reopen?: () => Promise<ImageNode>;
  /** Nodes this one was built on (its `file` and `backing` children), released with it. */
  readonly children: readonly string[];
  /** Close the node when it is deleted; false when it shares another entry's node (raw over file). */
  readonly ownsNode: boolean;
  /** The node's cache.direct / cache.no-flush as it runs (query-named-block-nodes shows them). */
  readonly cache?: NodeCache;
}

/** A node's BlockdevCacheOptions, resolved. */
export interface NodeCache {
  readonly direct: boolean;
  readonly noFlush: boolean;
}

export interface ExportEntry {
  readonly id: string;
  /** Changes when an active commit drops the exported node (see Daemon.replace). */
  nodeName: string;
  readonly nbd: NbdExport;
  shuttingDown: boolean;
  /** Frees the bitmaps the export offers (busy while it lives). */
  readonly releaseBitmaps: () => void;
}

export interface NbdServerStart {
  readonly address: ListenAddress;
  readonly tls?: TlsUpgrader;
  /** 0 = unlimited. Setting 1 also stops exports advertising multi-conn (as QEMU). */
  readonly maxConnections?: number;
}

export interface DaemonOptions {
  /** Diagnostic lines. */
  readonly log?: (line: string) => void;
  /** Called after an export is gone (block-export-del, nbd-server-stop): QMP's BLOCK_EXPORT_DELETED. */
  readonly onExportDeleted?: (id: string) => void;
}

/**
 * @example
 * const d = new Daemon();
 * d.add('disk', await openImage('a.qcow2'));
 * await d.startNbdServer({ address: { socketPath: '/tmp/nbd.sock' } });
 * d.addExport({ id: 'e0', nodeName: 'disk', name: 'disk', writable: true });
 * // ... nbdinfo 'nbd+unix:///disk?socket=/tmp/nbd.sock'
 * await d.shutdown();
 */
export class Daemon implements NodeGraph {
  readonly #nodes = new Map<string, NodeEntry>();
  /** child name → the entry that consumes it. */
  readonly #parents = new Map<string, string>();
  readonly #exports = new Map<string, ExportEntry>();
  readonly #releaseListeners = new Set<(node: ImageNode, reason: ReleaseReason) => void>();
  readonly #options: DaemonOptions;
  #server: { nbd: NbdServer; address: ListenAddress; maxConnections: number } | null = null;
  #shutdown: Promise<void> | null = null;
  #anonymousNodes = 0;
  /** Dirty bitmaps by node (block-dirty-bitmap-*, exported with block-export-add `bitmaps`). */
  readonly bitmaps = new NamedBitmaps();

  constructor(options: DaemonOptions = {}) {
    this.#options = options;
    this.onRelease((node, reason) => {
      if (reason === 'node-deleted' || reason === 'shutdown') this.bitmaps.dropNode(node);
    });
  }

  // ---- NodeGraph -------------------------------------------------------------

  node(name: string): ImageNode {
    const entry = this.#nodes.get(name) ?? this.#exportNode(name);
    if (!entry) throw new VdiskError('ENOENT', `Cannot find device='${name}' nor node-name='${name}'`, { field: 'node-name' });
    if (!entry.node) throw new VdiskError('EBUSY', `Node '${name}' is in use as the file of '${this.#parents.get(name) ?? '?'}'`, { field: 'node-name' });
    return entry.node;
  }

  nameOf(node: ImageNode): string | undefined {
    for (const e of this.#nodes.values()) if (e.node === node && e.ownsNode) return e.name;
    for (const e of this.#nodes.values()) if (e.node === node) return e.name;
    return undefined;
  }

  sourceFile(node: ImageNode): string | undefined {
    const name = this.nameOf(node);
    return name === undefined ? undefined : this.#nodes.get(name)?.filename;
  }

  add(name: string, node: ImageNode): void {
    this.addNode({ name, driver: node.format === 'ploop' ? 'parallels' : node.format, filename: node.filename, node, children: [], ownsNode: true });
  }

  async replace(from: ImageNode, to: ImageNode, options: ReplaceOptions = {}): Promise<void> {
    const users = [...this.#exports.values()].filter((e) => e.nbd.node === from);
    await Promise.all(users.map((e) => e.nbd.switchNode(to)));
    if (options.dropFrom) this.#dropReplaced(from, to, users);
  }

  /**
   * After an active commit: the entries of the old top and of every node
   * between it and `to` leave the graph (the job closes those images), as
   * QEMU drops the committed nodes. `to` keeps its name, or gets an anonymous
   * one (an implicitly opened backing file), and owns its node from now on, so
   * shutdown still closes it. Exports that named the old top now name `to`.
   */
  #dropReplaced(from: ImageNode, to: ImageNode, users: readonly ExportEntry[]): void {
    const fromName = this.nameOf(from);
    if (fromName === undefined) return;
    let toName = this.nameOf(to);
    const doomed: string[] = [];
    const visit = (name: string): void => {
      if (name === toName || doomed.includes(name)) return;
      const e = this.#nodes.get(name);
      if (!e) return;
      // A node still serving as `to` (raw over it, or `to` itself) stays.
      if (e.node === to) return;
      doomed.push(name);
      for (const c of e.children) visit(c);
    };
    visit(fromName);
    for (const name of doomed) {
      const e = this.#nodes.get(name);
      this.#nodes.delete(name);
      this.#parents.delete(name);
      for (const c of e?.children ?? []) if (this.#parents.get(c) === name) this.#parents.delete(c);
    }
    if (toName === undefined || !this.#nodes.get(toName)?.ownsNode) {
      toName ??= this.anonymousNodeName();
      this.#nodes.set(toName, { name: toName, driver: to.format === 'ploop' ? 'parallels' : to.format, filename: to.filename, node: to, children: [], ownsNode: true });
    }
    for (const e of this.#exports.values()) if (users.includes(e) || doomed.includes(e.nodeName)) e.nodeName = toName;
  }

  onRelease(listener: (node: ImageNode, reason: ReleaseReason) => void): () => void {
    this.#releaseListeners.add(listener);
    return () => this.#releaseListeners.delete(listener);
  }

  // ---- nodes -----------------------------------------------------------------

  get nodes(): readonly NodeEntry[] {
    return [...this.#nodes.values()];
  }

  entry(name: string): NodeEntry {
    const e = this.#nodes.get(name);
    if (!e) throw new VdiskError('ENOENT', `Cannot find node-name='${name}'`, { field: 'node-name' });
    return e;
  }

  /** The entry consuming `name` as its file or backing, if any. */
  parentOf(name: string): string | undefined {
    return this.#parents.get(name);
  }

  hasNode(name: string): boolean {
    return this.#nodes.has(name);
  }

  addNode(entry: NodeEntry): void {
    this.#checkRunning();
    if (this.#nodes.has(entry.name)) throw new VdiskError('EINVAL', `Duplicate nodes with node-name='${entry.name}'`, { field: 'node-name' });
    for (const c of entry.children) {
      const p = this.#parents.get(c);
      if (p !== undefined) throw new VdiskError('EBUSY', `Node '${c}' is already in use by '${p}'`, { field: 'node-name' });
    }
    this.#nodes.set(entry.name, entry);
    for (const c of entry.children) this.#parents.set(c, entry.name);
  }

  /** A name for a node given without one (QEMU spells them #blockNNN). */
  anonymousNodeName(): string {
    let name: string;
    do name = `#block${++this.#anonymousNodes}`;
    while (this.#nodes.has(name));
    return name;
  }

  /**
   * Records that the entry `parent` now sits over `child` (a live snapshot made it
   * its backing): `child` may not be deleted or snapshotted again while it is.
   * `filename` replaces what the entry shows as its file (a ploop stack's descriptor).
   */
  adoptBacking(parent: string, child: string, filename?: string): void {
    const entry = this.entry(parent);
    const owner = this.#parents.get(child);
    if (owner !== undefined) throw new VdiskError('EBUSY', `Node '${child}' is already in use by '${owner}'`, { field: 'node-name' });
    this.#nodes.set(parent, { ...entry, children: [...entry.children, child], ...(filename !== undefined ? { filename } : {}) });
    this.#parents.set(child, parent);
  }

  /** Gives a detached file node its handle back (a format open on it failed). */
  addNodeBack(name: string, node: ImageNode): void {
    const entry = this.entry(name);
    this.#nodes.set(name, { ...entry, node });
  }

  /** Closes a file node's own handle while `parent` (being added) owns the file. */
  async detachForParent(name: string): Promise<NodeEntry> {
    const entry = this.entry(name);
    const p = this.#parents.get(name);
    if (p !== undefined) throw new VdiskError('EBUSY', `Node '${name}' is already in use by '${p}'`, { field: 'node-name' });
    const user = [...this.#exports.values()].find((e) => e.nodeName === name || e.nbd.node === entry.node);
    if (user) throw new VdiskError('EBUSY', `Node '${name}' is busy: block device is in use by block export '${user.id}'`, { field: 'node-name' });
    if (entry.node && entry.ownsNode) {
      this.#release(entry.node, 'node-deleted');
      await entry.node.close();
    }
    const detached: NodeEntry = { ...entry, node: null };
    this.#nodes.set(name, detached);
    return detached;
  }

  /** blockdev-del: refused while the node is exported or used by another node. */
  async deleteNode(name: string): Promise<void> {
    const entry = this.entry(name);
    const parent = this.#parents.get(name);
    if (parent !== undefined) throw new VdiskError('EBUSY', `Node '${name}' is busy: node is used as child of '${parent}'`, { field: 'node-name' });
    for (const e of this.#exports.values()) {
      if (e.nodeName === name || (entry.node && e.nbd.node === entry.node)) throw new VdiskError('EBUSY', `Node '${name}' is busy: block device is in use by block export '${e.id}'`, { field: 'node-name' });
    }
    // Listeners run while the node still has its name, so they can tell which it is.
    if (entry.node) this.#release(entry.node, 'node-deleted');
    this.#nodes.delete(name);
    for (const c of entry.children) this.#parents.delete(c);
    if (entry.ownsNode && entry.node) await entry.node.close();
    // A file node the deleted node had consumed gets its own handle back.
    for (const c of entry.children) {
      const child = this.#nodes.get(c);
      if (child && !child.node && child.reopen) this.#nodes.set(c, { ...child, node: await child.reopen() });
    }
  }

  // ---- NBD server and exports --------------------------------------------------

  get nbdServer(): NbdServer | null {
    return this.#server?.nbd ?? null;
  }

  get nbdAddress(): ListenAddress | null {
    return this.#server?.address ?? null;
  }

  get exports(): readonly ExportEntry[] {
    return [...this.#exports.values()];
  }

  async startNbdServer(start: NbdServerStart): Promise<ListenAddress> {
    this.#checkRunning();
    if (this.#server) throw new VdiskError('EBUSY', 'NBD server already running');
    const log = this.#options.log ?? (() => undefined);
    const nbd = new NbdServer({
      onProtocolError: (e) => log(`client dropped: ${e instanceof Error ? e.message : String(e)}`),
      onRequestError: (cmd, e) => log(`${cmd} failed: ${e instanceof Error ? e.message : String(e)}`),
      ...(start.maxConnections ? { maxClients: start.maxConnections } : {}),
      ...(start.tls ? { tls: start.tls } : {}),
    });
    let address = start.address;
    if ('socketPath' in address) removeStaleSocket(address.socketPath);
    const port = await nbd.listen(address);
    if (!('socketPath' in address)) address = { host: address.host, port };
    this.#server = { nbd, address, maxConnections: start.maxConnections ?? 0 };
    return address;
  }

  /** nbd-server-stop: every export goes (clients are disconnected), then the listener. */
  async stopNbdServer(): Promise<void> {
    const server = this.#server;
    if (!server) throw new VdiskError('EINVAL', 'NBD server not running');
    for (const id of [...this.#exports.keys()]) await this.deleteExport(id, { hard: true });
    this.#server = null;
    await server.nbd.close();
    if ('socketPath' in server.address) fs.rmSync(server.address.socketPath, { force: true });
  }

  addExport(options: {
    id: string;
    nodeName: string;
    name?: string;
    description?: string;
    writable?: boolean;
    allocationDepth?: boolean;
    bitmaps?: ReadonlyArray<{ readonly name: string; readonly bitmap: DirtyBitmap }>;
  }): ExportEntry {
    this.#checkRunning();
    const server = this.#server;
    if (!server) throw new VdiskError('EINVAL', 'Cannot export: NBD server not running');
    if (this.#exports.has(options.id)) throw new VdiskError('EINVAL', `Block export id '${options.id}' is already in use`, { field: 'id' });
    this.entry(options.nodeName); // exports name a node-name, never a device (export) name
    const node = this.node(options.nodeName);
    const name = options.name ?? options.nodeName;
    if (options.writable && node.readOnly) throw new VdiskError('EPERM', `Cannot export node '${options.nodeName}' writable: it is read-only`, { field: 'writable' });
    if (server.nbd.find(name)?.name === name) throw new VdiskError('EINVAL', `NBD server already has export named '${name}'`, { field: 'name' });
    // Busy from here (refused if another export offers one), freed if the export cannot be added.
    const releaseBitmaps = this.bitmaps.claim(node, (options.bitmaps ?? []).map((b) => b.name));
    let nbd: NbdExport;
    try {
      nbd = server.nbd.addExport({
        name,
        node,
        readOnly: options.writable !== true,
        // One node behind every connection: a flush on one covers writes on all. max-connections=1 turns it off, as in QEMU.
        multiConn: server.maxConnections !== 1,
        allocationDepth: options.allocationDepth === true,
        ...(options.bitmaps ? { bitmaps: options.bitmaps } : {}),
        ...(options.description !== undefined ? { description: options.description } : {}),
      });
    } catch (e) {
      releaseBitmaps();
      throw e;
    }
    const exp: ExportEntry = { id: options.id, nodeName: options.nodeName, nbd, shuttingDown: false, releaseBitmaps };
    this.#exports.set(options.id, exp);
    return exp;
  }

  /** block-export-del: `hard` disconnects clients; otherwise clients still attached make it fail (EBUSY). */
  async deleteExport(id: string, options: { readonly hard?: boolean } = {}): Promise<void> {
    const exp = this.#exports.get(id);
    if (!exp) throw new VdiskError('ENOENT', `Export '${id}' is not found`, { field: 'id' });
    if (exp.shuttingDown) throw new VdiskError('EBUSY', `Export '${id}' is already shutting down`, { field: 'id' });
    exp.shuttingDown = true;
    try {
      await this.#server?.nbd.removeExport(exp.nbd.name, options);
    } catch (e) {
      exp.shuttingDown = false;
      throw e;
    }
    this.#exports.delete(id);
    exp.releaseBitmaps();
    this.#release(exp.nbd.node, 'export-removed');
    this.#options.onExportDeleted?.(id);
  }

  // ---- shutdown --------------------------------------------------------------

  /** Orderly stop; idempotent. Resolves once every node is flushed and closed. */
  shutdown(): Promise<void> {
    this.#shutdown ??= this.#stopAll();
    return this.#shutdown;
  }

  get stopping(): boolean {
    return this.#shutdown !== null;
  }

  async #stopAll(): Promise<void> {
    let failure: unknown = null;
    if (this.#server) {
      await this.stopNbdServer().catch((e: unknown) => (failure ??= e));
    }
    for (const e of this.#nodes.values()) if (e.node) this.#release(e.node, 'shutdown');
    // Parents first: a format node flushes into the file it consumes.
    const order = [...this.#nodes.values()].filter((e) => !this.#parents.has(e.name));
    for (let i = 0; i < order.length; i++) {
      for (const c of order[i]?.children ?? []) {
        const child = this.#nodes.get(c);
        if (child && !order.includes(child)) order.push(child);
      }
    }
    for (const e of this.#nodes.values()) if (!order.includes(e)) order.push(e);
    for (const e of order) {
      if (!e.ownsNode || !e.node) continue;
      try {
        await e.node.close();
      } catch (err) {
        failure ??= err;
      }
    }
    this.#nodes.clear();
    this.#parents.clear();
    this.#options.log?.('server stopped');
    if (failure !== null) throw failure;
  }

  #release(node: ImageNode, reason: ReleaseReason): void {
    for (const l of [...this.#releaseListeners]) {
      try {
        l(node, reason);
      } catch (e) {
        this.#options.log?.(`release listener failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  #exportNode(name: string): NodeEntry | undefined {
    const exp = this.#exports.get(name);
    return exp ? this.#nodes.get(exp.nodeName) : undefined;
  }

  #checkRunning(): void {
    if (this.#shutdown) throw new VdiskError('EINVAL', 'The daemon is shutting down');
  }
}

/** A socket file left by an earlier server is replaced, as qemu-nbd does; any other file is not touched. */
export function removeStaleSocket(socketPath: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new VdiskError('EINVAL', `Cannot listen on '${socketPath}': the path exists and is not a socket`, { file: socketPath });
  fs.rmSync(socketPath, { force: true });
}
