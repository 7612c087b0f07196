/**
 * `vdisk serve` in qemu-storage-daemon's form: objects, nodes, an NBD server
 * and exports from the command line, and QMP monitors to change them while
 * running. Command-line items are applied in the order given, as QSD does.
 */
import * as fs from 'node:fs';
import { VdiskError } from '../errors.js';
import { QmpServer, type QmpVersion } from '../qmp/index.js';
import { Daemon } from './daemon.js';
import { registerJobCommands } from './job-commands.js';
import type { JobRegistry } from './job-registry.js';
import { blockdevAdd } from './node-factory.js';
import { parseKeyval, typed } from './keyval.js';
import { addExport, registerDaemonCommands, startServer, type DaemonCommandContext } from './qmp-commands.js';
import { TlsObjects } from './tls-objects.js';

/** One command-line item, in order. */
export type ManagedItem =
  | { readonly kind: 'object' | 'blockdev' | 'nbd-server' | 'export' | 'chardev' | 'monitor'; readonly text: string }
  | { readonly kind: 'qmp'; readonly path: string };

/** What QMP reports as the version: the QEMU release whose interface vdisk follows. */
export const QMP_VERSION: QmpVersion = { qemu: { major: 7, minor: 2, micro: 0 }, package: 'vdisk 0.1.0' };

const BOOLS = ['read-only', 'auto-read-only', 'force-share', 'direct', 'no-flush', 'writable', 'writethrough', 'allocation-depth', 'server', 'wait', 'verify-peer', 'fixed-iothread'];
const INTS = ['max-connections'];

/**
 * @example
 * const m = await ManagedDaemon.start([{ kind: 'qmp', path: '/tmp/qmp.sock' }]);
 * await m.stopped; // after QMP `quit` or stop()
 */
export class ManagedDaemon {
  readonly daemon: Daemon;
  readonly qmp: QmpServer;
  readonly objects = new TlsObjects();
  readonly stopped: Promise<void>;
  #resolve: () => void = () => undefined;
  #reject: (e: unknown) => void = () => undefined;
  #stopping: Promise<void> | null = null;
  readonly #jobs: JobRegistry;

  private constructor(log?: (line: string) => void) {
    this.qmp = new QmpServer({ version: QMP_VERSION });
    this.daemon = new Daemon({
      ...(log ? { log } : {}),
      onExportDeleted: (id) => this.qmp.emitEvent('BLOCK_EXPORT_DELETED', { id }),
    });
    this.stopped = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.stopped.catch(() => undefined);
    const ctx: DaemonCommandContext = { daemon: this.daemon, objects: this.objects, quit: () => void this.stop().catch(() => undefined) };
    registerDaemonCommands(this.qmp, ctx);
    this.#jobs = registerJobCommands(this.qmp, this.daemon);
  }

  static async start(items: readonly ManagedItem[], log?: (line: string) => void): Promise<ManagedDaemon> {
    const m = new ManagedDaemon(log);
    try {
      await m.#apply(items);
    } catch (e) {
      await m.stop().catch(() => undefined);
      throw e;
    }
    return m;
  }

  /** Orderly shutdown: NBD server, then nodes, then the QMP sockets. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        // Jobs stop before their nodes close (they would also cancel on release, without waiting).
        await this.#jobs.cancelAll().catch(() => undefined);
        await this.daemon.shutdown();
      } finally {
        this.#jobs.close();
        await this.qmp.close();
      }
    })().then(
      () => this.#resolve(),
      (e: unknown) => {
        this.#reject(e);
        throw e;
      },
    );
    return this.#stopping;
  }

  async #apply(items: readonly ManagedItem[]): Promise<void> {
    const ctx: DaemonCommandContext = { daemon: this.daemon, objects: this.objects, quit: () => undefined };
    const chardevs = new Map<string, string>();
    for (const item of items) {
      if (item.kind === 'qmp') {
        await this.#listenQmp(item.path);
        continue;
      }
      switch (item.kind) {
        case 'object': {
          const { 'qom-type': qomType, ...props } = typed(parseKeyval(item.text, 'qom-type'), { bools: BOOLS });
          if (typeof qomType !== 'string') throw new VdiskError('EINVAL', `--object ${item.text}: missing the object type`, { field: 'qom-type' });
          this.objects.add(qomType, props);
          break;
        }
        case 'blockdev':
          await blockdevAdd({ daemon: this.daemon, clientTls: (id) => this.objects.clientTls(id) }, typed(parseKeyval(item.text), { bools: BOOLS }));
          break;
        case 'nbd-server':
          await startServer(ctx, typed(parseKeyval(item.text), { bools: BOOLS, ints: INTS }));
          break;
        case 'export':
          await addExport(this.daemon, typed(parseKeyval(item.text, 'type'), { bools: BOOLS }));
          break;
        case 'chardev': {
          const c = typed(parseKeyval(item.text, 'backend'), { bools: BOOLS });
          if (c['backend'] !== 'socket' || typeof c['path'] !== 'string' || typeof c['id'] !== 'string') {
            throw new VdiskError('ENOTSUP', `--chardev ${item.text}: only socket,path=PATH,server=on,wait=off,id=ID is supported`, { field: 'chardev' });
          }
          chardevs.set(c['id'], c['path']);
          break;
        }
        case 'monitor': {
          const mon = parseKeyval(item.text, 'chardev');
          const path = typeof mon['chardev'] === 'string' ? chardevs.get(mon['chardev']) : undefined;
          if (path === undefined) throw new VdiskError('EINVAL', `--monitor ${item.text}: chardev '${String(mon['chardev'])}' not found`, { field: 'chardev' });
          await this.#listenQmp(path);
          break;
        }
      }
    }
  }

  async #listenQmp(path: string): Promise<void> {
    try {
      const st = fs.lstatSync(path);
      if (!st.isSocket()) throw new VdiskError('EINVAL', `Cannot listen on '${path}': the path exists and is not a socket`, { file: path });
    } catch (e) {
      if (e instanceof VdiskError) throw e;
    }
    await this.qmp.listenUnix(path);
  }
}
