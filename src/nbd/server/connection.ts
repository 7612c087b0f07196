import type { Socket } from 'node:net';
import { negotiate, type ExportTable } from './negotiation.js';
import { ReplyWriter } from './reply-writer.js';
import { SocketReader } from './socket-reader.js';
import { Transmission, type RequestErrorSink, type TransmissionLimits } from './transmission.js';

export interface ConnectionOptions {
  readonly exports: ExportTable;
  readonly limits?: TransmissionLimits;
  readonly onRequestError?: RequestErrorSink;
  /** Protocol violations and connection failures, for logging. */
  readonly onProtocolError?: (error: unknown) => void;
}

/** One client: handshake, then transmission, then close. */
export class NbdConnection {
  readonly #socket: Socket;
  readonly #reader: SocketReader;
  readonly #writer: ReplyWriter;
  readonly #options: ConnectionOptions;
  #phase: 'handshake' | 'transmission' | 'closed' = 'handshake';

  constructor(socket: Socket, options: ConnectionOptions) {
    this.#socket = socket;
    this.#options = options;
    socket.setNoDelay?.(true);
    this.#reader = new SocketReader(socket);
    this.#writer = new ReplyWriter(socket);
  }

  /** Serves the client until it leaves; never rejects. */
  async serve(): Promise<void> {
    try {
      const agreement = await negotiate(this.#reader, this.#writer, this.#options.exports);
      if (agreement && this.#phase === 'handshake') {
        this.#phase = 'transmission';
        const t = new Transmission(
          { reader: this.#reader, writer: this.#writer },
          agreement,
          {
            ...(this.#options.limits ? { limits: this.#options.limits } : {}),
            ...(this.#options.onRequestError ? { onError: this.#options.onRequestError } : {}),
          },
        );
        await t.run();
      }
    } catch (e) {
      this.#options.onProtocolError?.(e);
    } finally {
      this.#phase = 'closed';
      await this.#close();
    }
  }

  /**
   * Orderly stop: no new requests are read; requests already accepted are
   * answered; then `serve` closes the socket. A client still negotiating is
   * dropped at once.
   */
  stop(): void {
    if (this.#phase === 'handshake') {
      this.#reader.stop('server shutting down');
      this.#socket.destroy();
    } else {
      this.#reader.stop('server shutting down');
    }
  }

  #close(): Promise<void> {
    return new Promise<void>((resolve) => {
      if (this.#socket.destroyed) return resolve();
      this.#socket.once('close', () => resolve());
      this.#socket.end();
      // A client that does not close its side must not hold the server up.
      setTimeout(() => this.#socket.destroy(), 1000).unref();
    });
  }
}
