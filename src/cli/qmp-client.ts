/**
 * A small QMP client for `vdisk job`: connects to a unix socket, reads the
 * greeting, negotiates capabilities, runs commands one at a time and passes
 * events to listeners.
 */
import * as net from 'node:net';
import { VdiskError } from '../errors.js';
import { JsonStreamSplitter } from '../qmp/index.js';

export interface QmpEventMessage {
  readonly event: string;
  readonly data?: Readonly<Record<string, unknown>>;
}

type Pending = { resolve: (v: unknown) => void; reject: (e: unknown) => void };

export class QmpClient {
  readonly #socket: net.Socket;
  readonly #splitter = new JsonStreamSplitter(16 << 20);
  readonly #pending: Pending[] = [];
  readonly #listeners = new Set<(e: QmpEventMessage) => void>();
  #greeting: Pending | null = null;
  #closedError: VdiskError | null = null;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#onData(chunk));
    const fail = (why: string): void => {
      this.#closedError ??= new VdiskError('EIO', `QMP connection closed: ${why}`);
      for (const p of this.#pending.splice(0)) p.reject(this.#closedError);
      this.#greeting?.reject(this.#closedError);
      this.#greeting = null;
    };
    socket.on('error', (e) => fail(e.message));
    socket.on('close', () => fail('the server closed it'));
  }

  /** Connects to the QMP socket at `path` and negotiates capabilities. */
  static async connect(path: string): Promise<QmpClient> {
    const socket = net.createConnection(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', (e) => reject(new VdiskError('EIO', `Failed to connect to '${path}': ${e.message}`, { file: path }, { cause: e })));
    });
    const client = new QmpClient(socket);
    await new Promise<unknown>((resolve, reject) => (client.#greeting = { resolve, reject }));
    await client.execute('qmp_capabilities');
    return client;
  }

  onEvent(listener: (e: QmpEventMessage) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Runs a command; resolves to its `return`, rejects with the server's error description. */
  execute(name: string, args?: Readonly<Record<string, unknown>>): Promise<unknown> {
    if (this.#closedError) return Promise.reject(this.#closedError);
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.#socket.write(`${JSON.stringify(args ? { execute: name, arguments: args } : { execute: name })}\n`);
    });
  }

  close(): void {
    this.#socket.end();
    this.#socket.destroy();
  }

  #onData(chunk: string): void {
    for (const m of this.#splitter.push(chunk)) {
      if (typeof m !== 'object' || m === null) continue;
      const msg = m as Record<string, unknown>;
      if ('QMP' in msg) {
        this.#greeting?.resolve(msg);
        this.#greeting = null;
      } else if (typeof msg['event'] === 'string') {
        const ev = msg as unknown as QmpEventMessage;
        for (const l of [...this.#listeners]) l(ev);
      } else if ('return' in msg || 'error' in msg) {
        const p = this.#pending.shift();
        if (!p) continue;
        if ('error' in msg) {
          const err = msg['error'] as { desc?: unknown } | undefined;
          p.reject(new VdiskError('EIO', typeof err?.desc === 'string' ? err.desc : 'QMP error'));
        } else p.resolve(msg['return']);
      }
    }
  }
}
