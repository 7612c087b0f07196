// A NodeGraph over named in-memory nodes and a QMP server with the job commands, for daemon and CLI tests.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ImageNode } from '../../../src/block/types.js';
import { QmpClient, type QmpEventMessage } from '../../../src/cli/qmp-client.js';
import type { NodeGraph, ReleaseReason } from '../../../src/daemon/graph.js';
import { registerJobCommands } from '../../../src/daemon/job-commands.js';
import { VdiskError } from '../../../src/errors.js';
import { QmpServer } from '../../../src/qmp/index.js';

/** A NodeGraph over a map of names, recording replaces. */
export class FakeGraph implements NodeGraph {
  readonly nodes = new Map<string, ImageNode>();
  readonly replaced: Array<[ImageNode, ImageNode]> = [];
  readonly #release = new Set<(node: ImageNode, reason: ReleaseReason) => void>();
  node(name: string): ImageNode {
    const n = this.nodes.get(name);
    if (!n) throw new VdiskError('ENOENT', `Cannot find device='${name}' nor node-name='${name}'`);
    return n;
  }
  nameOf(node: ImageNode): string | undefined {
    for (const [k, v] of this.nodes) if (v === node) return k;
    return undefined;
  }
  add(name: string, node: ImageNode): void {
    this.nodes.set(name, node);
  }
  async replace(from: ImageNode, to: ImageNode): Promise<void> {
    this.replaced.push([from, to]);
    for (const [k, v] of this.nodes) if (v === from) this.nodes.set(k, to);
  }
  sourceFile(node: ImageNode): string | undefined {
    return this.nameOf(node) === undefined ? undefined : node.filename;
  }
  async deleteNode(name: string): Promise<void> {
    const n = this.nodes.get(name);
    this.nodes.delete(name);
    await n?.close();
  }
  onRelease(listener: (node: ImageNode, reason: ReleaseReason) => void): () => void {
    this.#release.add(listener);
    return () => this.#release.delete(listener);
  }
  release(node: ImageNode): void {
    for (const l of this.#release) l(node, 'export-removed');
  }
}

export async function withQmp(fn: (ctx: { client: QmpClient; graph: FakeGraph; events: QmpEventMessage[]; socket: string }) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  const qmp = new QmpServer({ version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'vdisk' } });
  const graph = new FakeGraph();
  const registry = registerJobCommands(qmp, graph);
  let client: QmpClient | null = null;
  try {
    const sock = path.join(dir, 'qmp.sock');
    await qmp.listenUnix(sock);
    client = await QmpClient.connect(sock);
    const events: QmpEventMessage[] = [];
    client.onEvent((e) => events.push(e));
    await fn({ client, graph, events, socket: sock });
  } finally {
    client?.close();
    await registry.cancelAll();
    registry.close();
    await qmp.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function waitEvent(events: QmpEventMessage[], name: string): Promise<QmpEventMessage> {
  for (let i = 0; i < 500; i++) {
    const e = events.find((x) => x.event === name);
    if (e) return e;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no ${name} event; got ${events.map((e) => e.event).join(',')}`);
}

