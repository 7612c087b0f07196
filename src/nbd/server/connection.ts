import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { protocolError } from '../protocol/wire.js';
import { DirectSocket } from './direct-socket.js';
import type { NbdExport } from './export.js';
import { negotiate, type ExportTable, type NegotiationIo, type NegotiationTls } from './negotiation.js';
import { ReplyWriter } from './reply-writer.js';
import { ArenaReader } from './arena-reader.js';
import { SocketReader } from './socket-reader.js';
import type { TlsUpgrader } from './tls.js';
import { Transmission, type RequestErrorSink, type TransmissionLimits } from './transmission.js';

export interface ConnectionOptions {
  readonly exports: ExportTable;
  readonly limits?: TransmissionLimits;
  readonly onRequestError?: RequestErrorSink;
  /** Protocol violations and connection failures, for logging. */
  readonly onProtocolError?: (error: unknown) => void;
  /** TLS offered on this connection (STARTTLS), and whether it is required. */
  readonly tls?: TlsUpgrader;
}

/** One client: handshake (with STARTTLS when configured), then transmission, then close. */
export class NbdConnection {
  readonly #socket: Socket;
  #stream: Duplex;
  readonly #io: NegotiationIo;
  readonly #options: ConnectionOptions;
  #phase: 'handshake' | 'transmission' | 'closed' = 'handshake';
  #export: NbdExport | null = null;

  constructor(socket: Socket, options: ConnectionOptions) {
    this.#socket = socket;
    this.#stream = socket;
    this.#options = options;
    socket.setNoDelay?.(true);
    this.#io = { reader: new SocketReader(socket), writer: new ReplyWriter(socket, DirectSocket.of(socket)) };
  }

  /** The export this client is attached to, once the handshake chose one. */
  get export(): NbdExport | null {
    return this.#export;
  }

  /** Serves the client until it leaves; never rejects. */
  async serve(): Promise<void> {
    try {
      const agreement = await negotiate(this.#io, this.#options.exports, this.#negotiationTls());
      if (agreement && this.#phase === 'handshake') {
        this.#phase = 'transmission';
        this.#export = agreement.export;
        if (this.#stream === this.#socket) this.#readIntoArenas();
        const t = new Transmission(this.#io, agreement, {
          ...(this.#options.limits ? { limits: this.#options.limits } : {}),
          ...(this.#options.onRequestError ? { onError: this.#options.onRequestError } : {}),
        });
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
    this.#io.reader.stop('server shutting down');
    if (this.#phase === 'handshake') {
      this.#stream.destroy();
      this.#socket.destroy();
    }
  }

  /** A plain socket's requests are read into the reader's arenas (see arena-reader.ts), where this Node allows it. */
  #readIntoArenas(): void {
    if (process.env.VDISK_NO_ARENA_READS === '1') return;
    const early = this.#io.reader.detach();
    this.#io.reader = ArenaReader.take(this.#socket, early) ?? new SocketReader(this.#socket, undefined, early);
  }

  #negotiationTls(): NegotiationTls | undefined {
    const tls = this.#options.tls;
    if (!tls) return undefined;
    return {
      required: tls.required,
      start: async () => {
        // The client sends its TLS hello only after our ACK, so nothing may be buffered.
        const early = this.#io.reader.detach();
        if (early.byteLength > 0) throw protocolError(`${early.byteLength} bytes sent after STARTTLS before the TLS handshake`, 'starttls');
        const secure = await tls.upgrade(this.#socket);
        this.#stream = secure;
        this.#io.reader = new SocketReader(secure);
        this.#io.writer = new ReplyWriter(secure);
      },
    };
  }

  #close(): Promise<void> {
    const stream = this.#stream;
    return new Promise<void>((resolve) => {
      if (this.#socket.destroyed) {
        stream.destroy();
        return resolve();
      }
      const timer = setTimeout(() => {
        stream.destroy();
        this.#socket.destroy();
      }, 1000);
      timer.unref();
      this.#socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      // The reader paused the stream: let the client's end of stream (after DISC) arrive so the socket closes now, not at the timer.
      stream.resume();
      stream.end();
      // A client that does not close its side must not hold the server up (timer above).
    });
  }
}
