import * as net from 'node:net';
import { VdiskError } from '../errors.js';
import { checkArgs, type ParamSpec } from './args.js';
import { JsonStreamSplitter } from './json-stream.js';
import { parseCommand, QmpError, timestampNow, type QmpVersion } from './protocol.js';
import { unlinkPath } from '../host/fs-calls.js';

export type QmpReturn = unknown;

export interface QmpCommandDef {
  /** Parameters checked before the handler runs; omit to check nothing. */
  readonly params?: ParamSpec;
  /** Runs the command; resolves to the `return` value (`{}` when there is none). */
  readonly handler: (args: Readonly<Record<string, unknown>>, session: QmpSession) => Promise<QmpReturn> | QmpReturn;
  /** Allowed before qmp_capabilities (only qmp_capabilities itself is, in QEMU). */
  readonly beforeNegotiation?: boolean;
}

export interface QmpServerOptions {
  readonly version: QmpVersion;
  /** Largest accepted message; bigger ones get an error and are dropped. */
  readonly maxMessageBytes?: number;
}

/**
 * A QMP monitor: greeting, capabilities negotiation, commands answered in
 * order per connection, events broadcast with timestamps to negotiated
 * connections. The command table is filled by the daemon.
 */
export class QmpServer {
  readonly #commands = new Map<string, QmpCommandDef>();
  readonly #sessions = new Set<QmpSession>();
  readonly #servers: net.Server[] = [];
  readonly #socketPaths: string[] = [];
  readonly #options: QmpServerOptions;

  constructor(options: QmpServerOptions) {
    this.#options = options;
    this.register('qmp_capabilities', {
      params: { 'enable?': 'any' },
      beforeNegotiation: true,
      handler: (_args, session) => {
        if (session.negotiated) {
          throw new QmpError('CommandNotFound', 'Capabilities negotiation is already complete, command ignored');
        }
        session.negotiated = true;
        return {};
      },
    });
    this.register('query-version', { params: {}, handler: () => this.#options.version });
    this.register('query-commands', {
      params: {},
      handler: () => [...this.#commands.keys()].sort().map((name) => ({ name })),
    });
  }

  register(name: string, def: QmpCommandDef): void {
    this.#commands.set(name, def);
  }

  get commandNames(): string[] {
    return [...this.#commands.keys()];
  }

  /** Listens on a unix socket path (removed again on close). */
  async listenUnix(path: string): Promise<void> {
    await unlinkPath(path).catch(() => undefined);
    const server = net.createServer((socket) => this.attach(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#servers.push(server);
    this.#socketPaths.push(path);
  }

  /** Serves one connected stream (a socket, or stdio in tests). */
  attach(socket: net.Socket): QmpSession {
    const session = new QmpSession(this, socket, this.#options.maxMessageBytes ?? 1 << 20);
    this.#sessions.add(session);
    socket.on('close', () => this.#sessions.delete(session));
    session.send({ QMP: { version: this.#options.version, capabilities: ['oob'] } });
    return session;
  }

  /** Sends an event to every negotiated connection. */
  emitEvent(event: string, data?: unknown): void {
    const msg = data === undefined ? { event, timestamp: timestampNow() } : { event, data, timestamp: timestampNow() };
    for (const s of this.#sessions) if (s.negotiated) s.send(msg);
  }

  async close(): Promise<void> {
    for (const s of this.#sessions) s.end();
    await Promise.all(this.#servers.map((srv) => new Promise<void>((resolve) => srv.close(() => resolve()))));
    this.#servers.length = 0;
    await Promise.all(this.#socketPaths.map((p) => unlinkPath(p).catch(() => undefined)));
    this.#socketPaths.length = 0;
  }

  /** @internal Runs one message from a session and returns the reply. */
  async dispatch(session: QmpSession, message: unknown): Promise<Record<string, unknown>> {
    let idPart: Record<string, unknown> = {};
    try {
      if (message instanceof VdiskError) throw message;
      if (message instanceof SyntaxError) throw new QmpError('GenericError', message.message.startsWith('JSON parse error') ? message.message : `JSON parse error, ${message.message}`);
      const cmd = parseCommand(message);
      if (cmd.hasId) idPart = { id: cmd.id };
      const def = this.#commands.get(cmd.name);
      if (!session.negotiated && !def?.beforeNegotiation) {
        throw new QmpError('CommandNotFound', "Expecting capabilities negotiation with 'qmp_capabilities'");
      }
      if (!def) throw new QmpError('CommandNotFound', `The command ${cmd.name} has not been found`);
      if (def.params) checkArgs(def.params, cmd.args);
      const ret = await def.handler(cmd.args, session);
      return { return: ret ?? {}, ...idPart };
    } catch (e) {
      return { error: toQmpError(e), ...idPart };
    }
  }
}

function toQmpError(e: unknown): { class: string; desc: string } {
  if (e instanceof QmpError) return { class: e.errorClass, desc: e.message };
  if (e instanceof VdiskError) return { class: 'GenericError', desc: e.message };
  return { class: 'GenericError', desc: e instanceof Error ? e.message : String(e) };
}

/** One client connection of a QmpServer. */
export class QmpSession {
  negotiated = false;
  readonly #server: QmpServer;
  readonly #socket: net.Socket;
  readonly #splitter: JsonStreamSplitter;
  #queue: Promise<void> = Promise.resolve();

  constructor(server: QmpServer, socket: net.Socket, maxBytes: number) {
    this.#server = server;
    this.#socket = socket;
    this.#splitter = new JsonStreamSplitter(maxBytes);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    socket.on('error', () => socket.destroy());
  }

  send(message: unknown): void {
    if (!this.#socket.destroyed && this.#socket.writable) this.#socket.write(`${JSON.stringify(message)}\r\n`);
  }

  end(): void {
    this.#socket.end();
  }

  #onData(chunk: string): void {
    for (const m of this.#splitter.push(chunk)) {
      // Commands of one connection are answered in order, one at a time, as QEMU's monitor does.
      this.#queue = this.#queue.then(async () => this.send(await this.#server.dispatch(this, m)));
    }
  }
}
