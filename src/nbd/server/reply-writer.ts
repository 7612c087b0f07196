import type { Duplex } from 'node:stream';

/**
 * Writes whole messages to a socket. A message (a list of buffers) is handed to
 * the socket in one synchronous step, so the bytes of two replies never
 * interleave; `send` resolves once the socket has room again.
 */
export class ReplyWriter {
  readonly #stream: Duplex;
  #closed = false;

  constructor(stream: Duplex) {
    this.#stream = stream;
    stream.on('close', () => {
      this.#closed = true;
    });
  }

  get closed(): boolean {
    return this.#closed || this.#stream.destroyed;
  }

  async send(parts: readonly Uint8Array[]): Promise<void> {
    if (this.closed) return;
    let full = false;
    for (const p of parts) {
      if (p.byteLength > 0 && !this.#stream.write(p)) full = true;
    }
    if (full) await this.#drained();
  }

  #drained(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        this.#stream.off('drain', done);
        this.#stream.off('close', done);
        resolve();
      };
      this.#stream.on('drain', done);
      this.#stream.on('close', done);
    });
  }
}
