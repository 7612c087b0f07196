import type { Duplex } from 'node:stream';

/**
 * Writes whole messages to a socket. A message (a list of buffers) is handed to
 * the socket in one synchronous step, so the bytes of two replies never
 * interleave; `send` resolves once the socket has room again.
 */
export class ReplyWriter {
  readonly #stream: Duplex;
  #closed = false;
  /** One wait for 'drain' shared by every sender that found the socket full (one listener pair, however many senders). */
  #drain: Promise<void> | null = null;

  constructor(stream: Duplex) {
    this.#stream = stream;
    stream.on('close', () => {
      this.#closed = true;
    });
  }

  get closed(): boolean {
    return this.#closed || this.#stream.destroyed;
  }

  /**
   * Queues one message. `released` runs once the socket no longer refers to any
   * of the parts (written out, or dropped with a closed socket), so their
   * buffers may be reused. Resolves once the socket has room again (a reply
   * that fits costs no pending promise: the hot path).
   */
  send(parts: readonly Uint8Array[], released?: () => void): Promise<void> {
    return this.#queue(parts, released) ? Promise.resolve() : this.#drained();
  }

  /** Queues the message; false when the socket is full. */
  #queue(parts: readonly Uint8Array[], released?: () => void): boolean {
    if (this.closed) {
      released?.();
      return true;
    }
    let full = false;
    // Corked, the parts of one reply (header and data) leave in one writev
    // instead of one syscall (and, over TCP, one packet) each.
    const cork = parts.length > 1;
    if (cork) this.#stream.cork();
    let last = -1;
    for (let i = 0; i < parts.length; i++) if ((parts[i]?.byteLength ?? 0) > 0) last = i;
    for (let i = 0; i <= last; i++) {
      const p = parts[i];
      if (!p || p.byteLength === 0) continue;
      // Chunks leave in order, so the last one's callback means all of them have.
      const ok = i === last && released ? this.#stream.write(p, () => released()) : this.#stream.write(p);
      if (!ok) full = true;
    }
    if (cork) this.#stream.uncork();
    if (last < 0) released?.();
    return !full;
  }

  /** After `#queue` returned false: resolves once the socket has room again (or is closed). */
  #drained(): Promise<void> {
    this.#drain ??= new Promise<void>((resolve) => {
      const done = (): void => {
        this.#stream.off('drain', done);
        this.#stream.off('close', done);
        this.#drain = null;
        resolve();
      };
      this.#stream.on('drain', done);
      this.#stream.on('close', done);
    });
    return this.#drain;
  }
}
