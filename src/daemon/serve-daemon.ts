import * as fs from 'node:fs';
import { openImage, type ImageNode, type OpenOptions } from '../block/index.js';
import { VdiskError } from '../errors.js';
import type { CacheMode, FormatName } from '../formats/driver.js';
import type { DirtyBitmap } from '../block/dirty-bitmap.js';
import { NbdServer, type ListenAddress, type TlsUpgrader } from '../nbd/index.js';
import { followWrites, loadPersistentBitmap } from '../nbd/index.js';
import { nbdUri } from './uri.js';

export interface ServeOptions {
  readonly image: string;
  /**
   * The image, already opened (vdisk serve --image-opts opens it as its option
   * string says); `format`, `readOnly` and `cache` then do not open it again.
   * The daemon owns it from here and closes it.
   */
  readonly opened?: ImageNode;
  readonly format?: FormatName;
  readonly readOnly?: boolean;
  readonly cache?: CacheMode;
  readonly exportName: string;
  readonly description?: string;
  readonly address: ListenAddress;
  /** Keep serving after the last client left (qemu-nbd -t). */
  readonly persistent?: boolean;
  /** Clients served at once (qemu-nbd -e); 0 = unlimited. */
  readonly maxClients: number;
  /** Diagnostic lines (stderr in the CLI). */
  readonly log?: (line: string) => void;
  /** TLS (qemu-nbd --tls-creds): clients must use it. */
  readonly tls?: TlsUpgrader;
  /** Persistent bitmaps offered as qemu:dirty-bitmap:NAME (qemu-nbd -B). */
  readonly bitmaps?: readonly string[];
}

/**
 * One image served over NBD: opens the image, listens, and shuts down in
 * order (stop accepting, answer in-flight requests, flush and close the
 * image, remove the socket file).
 *
 * @example
 * const d = await ServeDaemon.start({ image: 'disk.raw', exportName: '', address: { socketPath: '/tmp/s' }, maxClients: 1 });
 * console.log(d.uri); // nbd+unix:///?socket=/tmp/s
 * await d.stopped;    // resolves after stop() or the last client left
 */
export class ServeDaemon {
  readonly node: ImageNode;
  readonly server: NbdServer;
  readonly address: ListenAddress;
  readonly uri: string;
  /** Resolves once the daemon has shut down; rejects if flushing or closing the image failed. */
  readonly stopped: Promise<void>;
  readonly #options: ServeOptions;
  #stopping: Promise<void> | null = null;
  #resolveStopped: () => void = () => undefined;
  #rejectStopped: (e: unknown) => void = () => undefined;

  private constructor(options: ServeOptions, node: ImageNode, server: NbdServer, address: ListenAddress) {
    this.#options = options;
    this.node = node;
    this.server = server;
    this.address = address;
    this.uri = nbdUri(address, options.exportName);
    this.stopped = new Promise<void>((resolve, reject) => {
      this.#resolveStopped = resolve;
      this.#rejectStopped = reject;
    });
    // Callers that only call stop() must not see an unhandled rejection here.
    this.stopped.catch(() => undefined);
  }

  static async start(options: ServeOptions): Promise<ServeDaemon> {
    const openOptions: OpenOptions = {
      readOnly: options.readOnly === true,
      ...(options.format ? { format: options.format } : {}),
      ...(options.cache ? { cache: options.cache } : {}),
    };
    const node = options.opened ?? (await openImage(options.image, openOptions));
    let bitmaps: Array<{ name: string; bitmap: DirtyBitmap }>;
    try {
      bitmaps = await loadExportBitmaps(node, options.bitmaps ?? []);
    } catch (e) {
      await node.close().catch(() => undefined);
      throw e;
    }
    const log = options.log ?? (() => undefined);
    let daemon: ServeDaemon | null = null;
    const server = new NbdServer({
      maxClients: options.maxClients,
      ...(options.tls ? { tls: options.tls } : {}),
      onProtocolError: (e) => log(`client dropped: ${e instanceof Error ? e.message : String(e)}`),
      onRequestError: (cmd, e) => log(`${cmd} failed: ${e instanceof Error ? e.message : String(e)}`),
      onClientClosed: (active) => {
        if (active === 0 && !options.persistent && daemon) void daemon.stop();
      },
    });
    server.addExport({
      name: options.exportName,
      node,
      readOnly: options.readOnly === true,
      ...(bitmaps.length > 0 ? { bitmaps } : {}),
      ...(options.description !== undefined ? { description: options.description } : {}),
      // Every connection goes through this one node, so a flush on one covers writes on all.
      multiConn: options.maxClients !== 1,
    });
    let address = options.address;
    try {
      if ('socketPath' in address) removeStaleSocket(address.socketPath);
      const port = await server.listen(address);
      if (!('socketPath' in address)) address = { host: address.host, port };
    } catch (e) {
      await node.close().catch(() => undefined);
      throw e;
    }
    daemon = new ServeDaemon(options, node, server, address);
    return daemon;
  }

  /** Orderly shutdown; idempotent. */
  stop(): Promise<void> {
    if (!this.#stopping) {
      this.#stopping = this.#shutdown().then(
        () => this.#resolveStopped(),
        (e: unknown) => {
          this.#rejectStopped(e);
          throw e;
        },
      );
    }
    return this.#stopping;
  }

  async #shutdown(): Promise<void> {
    try {
      await this.server.close();
      await this.node.flush();
    } finally {
      try {
        await this.node.close();
      } finally {
        if ('socketPath' in this.address) fs.rmSync(this.address.socketPath, { force: true });
        this.#options.log?.('server stopped');
      }
    }
  }
}

/** A socket file left by an earlier server is replaced, as qemu-nbd does; any other file is not touched. */
function removeStaleSocket(socketPath: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socketPath);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new VdiskError('EINVAL', `Cannot listen on '${socketPath}': the path exists and is not a socket`, { file: socketPath });
  fs.rmSync(socketPath, { force: true });
}

/** qemu-nbd -B: each named persistent bitmap, recording this process's writes when it is enabled. */
async function loadExportBitmaps(node: ImageNode, names: readonly string[]): Promise<Array<{ name: string; bitmap: DirtyBitmap }>> {
  const out: Array<{ name: string; bitmap: DirtyBitmap }> = [];
  for (const name of names) {
    const { bitmap, enabled } = await loadPersistentBitmap(node, name);
    // Observers die with the node at close, so the detach function is not kept.
    if (enabled && !node.readOnly) followWrites(node, bitmap);
    out.push({ name, bitmap });
  }
  return out;
}

/** Stops `daemon` on SIGINT / SIGTERM; returns a function that removes the handlers. */
export function stopOnSignals(daemon: ServeDaemon): () => void {
  const handler = (): void => {
    void daemon.stop().catch(() => undefined);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
