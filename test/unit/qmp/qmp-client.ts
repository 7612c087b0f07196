import * as net from 'node:net';
import { JsonStreamSplitter } from '../../../src/qmp/json-stream.js';

/** A minimal QMP client for tests: sends raw text, collects messages in order. */
export class TestQmpClient {
  readonly messages: Array<Record<string, unknown>> = [];
  readonly #socket: net.Socket;
  readonly #splitter = new JsonStreamSplitter();
  #waiters: Array<() => void> = [];

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (c: string) => {
      for (const m of this.#splitter.push(c)) this.messages.push(m as Record<string, unknown>);
      const w = this.#waiters;
      this.#waiters = [];
      for (const f of w) f();
    });
  }

  static connect(path: string): Promise<TestQmpClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path, () => resolve(new TestQmpClient(s)));
      s.once('error', reject);
    });
  }

  sendRaw(text: string): void {
    this.#socket.write(text);
  }

  /** Waits for the next message matching `pred` that arrives at or after index `from`. */
  async next(pred: (m: Record<string, unknown>) => boolean, from = 0): Promise<Record<string, unknown>> {
    for (;;) {
      const found = this.messages.slice(from).find(pred);
      if (found) return found;
      await new Promise<void>((r) => this.#waiters.push(r));
    }
  }

  /** Sends a command and waits for its reply (matched by a generated id). */
  async execute(name: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = `t${Math.random().toString(36).slice(2)}`;
    this.#socket.write(JSON.stringify({ execute: name, ...(args ? { arguments: args } : {}), id }));
    return this.next((m) => m['id'] === id);
  }

  close(): void {
    this.#socket.end();
  }
}
