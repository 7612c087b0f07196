import * as net from 'node:net';
import { VdiskError } from '../../errors.js';
import { NbdConnection } from './connection.js';
import { NbdExport, type NbdExportOptions } from './export.js';
import type { ExportTable } from './negotiation.js';
import type { TlsUpgrader } from './tls.js';
import type { RequestErrorSink, TransmissionLimits } from './transmission.js';

export type ListenAddress = { readonly socketPath: string } | { readonly host: string; readonly port: number };

export interface NbdServerOptions {
  /**
   * Clients served at once (qemu-nbd -e). Further clients wait, unanswered,
   * until one leaves; 0 means no limit.
   */
  readonly maxClients?: number;
  readonly limits?: TransmissionLimits;
  readonly onRequestError?: RequestErrorSink;
  readonly onProtocolError?: (error: unknown) => void;
  /** Called after a client left, with the number still connected. */
  readonly onClientClosed?: (active: number) => void;
  /** STARTTLS support; with `required`, clients must use TLS. */
  readonly tls?: TlsUpgrader;
}

/**
 * An NBD server: a listening socket and the exports it offers.
 *
 * @example
 * const server = new NbdServer();
 * server.addExport({ name: '', node });
 * await server.listen({ socketPath: '/tmp/nbd.sock' });
 * // ... nbdinfo 'nbd+unix:///?socket=/tmp/nbd.sock'
 * await server.close();
 */
export class NbdServer implements ExportTable {
  readonly #exports = new Map<string, NbdExport>();
  readonly #options: NbdServerOptions;
  readonly #active = new Map<NbdConnection, Promise<void>>();
  readonly #waiting: net.Socket[] = [];
  #server: net.Server | null = null;
  #closing = false;
  #defaultName: string | null = null;

  constructor(options: NbdServerOptions = {}) {
    this.#options = options;
  }

  /** Adds an export; the first one added also answers to the empty (default) name. */
  addExport(options: NbdExportOptions): NbdExport {
    if (this.#exports.has(options.name)) throw new VdiskError('EINVAL', `NBD export '${options.name}' already exists`, { field: 'name' });
    const exp = new NbdExport(options);
    this.#exports.set(exp.name, exp);
    if (this.#defaultName === null) this.#defaultName = exp.name;
    return exp;
  }

  /**
   * Removes an export. Clients attached to it are refused (EBUSY) unless
   * `hard`, which stops them: requests they already sent are answered, then
   * they are disconnected. Resolves once they are gone.
   */
  async removeExport(name: string, options: { readonly hard?: boolean } = {}): Promise<void> {
    const exp = this.#exports.get(name);
    if (!exp) throw new VdiskError('ENOENT', `NBD export '${name}' does not exist`, { field: 'name' });
    const users = [...this.#active.entries()].filter(([c]) => c.export === exp);
    if (users.length > 0 && options.hard !== true) {
      throw new VdiskError('EBUSY', `export '${name}' still in use`, { field: 'name' });
    }
    this.#exports.delete(name);
    if (this.#defaultName === name) this.#defaultName = null;
    for (const [c] of users) c.stop();
    await Promise.all(users.map(([, done]) => done));
  }

  /** Clients currently attached to the export named `name`. */
  clientsOf(name: string): number {
    const exp = this.#exports.get(name);
    return exp ? [...this.#active.keys()].filter((c) => c.export === exp).length : 0;
  }

  find(name: string): NbdExport | undefined {
    const exact = this.#exports.get(name);
    if (exact) return exact;
    return name === '' && this.#defaultName !== null ? this.#exports.get(this.#defaultName) : undefined;
  }

  list(): readonly NbdExport[] {
    return [...this.#exports.values()];
  }

  get activeClients(): number {
    return this.#active.size;
  }

  /** Starts listening; resolves with the bound TCP port (0 for a Unix socket). */
  listen(address: ListenAddress): Promise<number> {
    const server = net.createServer((socket) => this.#accept(socket));
    this.#server = server;
    return new Promise<number>((resolve, reject) => {
      server.once('error', (e) => reject(new VdiskError('EIO', `Cannot listen on ${describeAddress(address)}: ${e.message}`, {}, { cause: e })));
      const ready = (): void => {
        const a = server.address();
        resolve(typeof a === 'object' && a !== null ? a.port : 0);
      };
      if ('socketPath' in address) server.listen(address.socketPath, ready);
      else server.listen(address.port, address.host, ready);
    });
  }

  /**
   * Stops accepting, lets every client's accepted requests finish, closes the
   * connections. Closing the exported nodes is the owner's job.
   */
  async close(): Promise<void> {
    this.#closing = true;
    const closed = new Promise<void>((resolve) => {
      if (!this.#server) resolve();
      else this.#server.close(() => resolve());
    });
    for (const s of this.#waiting.splice(0)) s.destroy();
    for (const c of this.#active.keys()) c.stop();
    await Promise.all(this.#active.values());
    await closed;
  }

  #accept(socket: net.Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    socket.on('error', () => undefined);
    const max = this.#options.maxClients ?? 0;
    if (max > 0 && this.#active.size >= max) {
      this.#waiting.push(socket);
      socket.once('close', () => {
        const i = this.#waiting.indexOf(socket);
        if (i >= 0) this.#waiting.splice(i, 1);
      });
      return;
    }
    this.#start(socket);
  }

  #start(socket: net.Socket): void {
    const conn = new NbdConnection(socket, {
      exports: this,
      ...(this.#options.limits ? { limits: this.#options.limits } : {}),
      ...(this.#options.onRequestError ? { onRequestError: this.#options.onRequestError } : {}),
      ...(this.#options.onProtocolError ? { onProtocolError: this.#options.onProtocolError } : {}),
      ...(this.#options.tls ? { tls: this.#options.tls } : {}),
    });
    const done = conn.serve().then(() => {
      this.#active.delete(conn);
      const next = this.#closing ? undefined : this.#waiting.shift();
      if (next) this.#start(next);
      this.#options.onClientClosed?.(this.#active.size);
    });
    this.#active.set(conn, done);
  }
}

export function describeAddress(address: ListenAddress): string {
  return 'socketPath' in address ? `unix socket '${address.socketPath}'` : `${address.host}:${address.port}`;
}
