import type { Duplex } from 'node:stream';
import type { DirectSocket } from './direct-socket.js';

/** One reply: its buffers in order, and what to call once the socket is done with them. */
export interface ReplyMessage {
  readonly parts: readonly Uint8Array[];
  readonly released?: (() => void) | undefined;
}

/** A reply waiting behind the rest of a reply sent partly straight to the socket. */
interface HeldReply extends ReplyMessage {
  readonly queued: () => void;
}

/**
 * Writes whole messages to a socket. A message (a list of buffers) is handed to
 * the socket in one synchronous step, so the bytes of two replies never
 * interleave; `send` resolves once the socket has room again.
 *
 * With a DirectSocket, a reply may also go to the socket's descriptor directly
 * (`trySendDirect`: sendfile from a host file), but only when nothing is queued
 * on the stream, so it cannot overtake an earlier reply. When the socket takes
 * only part of it, later replies are held in order until the rest is queued.
 */
export class ReplyWriter {
  readonly #stream: Duplex;
  readonly #direct: DirectSocket | null;
  #closed = false;
  /** One wait for 'drain' shared by every sender that found the socket full (one listener pair, however many senders). */
  #drain: Promise<void> | null = null;
  /** Replies that came while the rest of a direct reply was being read: non-null exactly while one is. */
  #held: HeldReply[] | null = null;
  /** Replies sent straight to the socket, whole or in part (for tests and diagnostics). */
  directReplies = 0;

  constructor(stream: Duplex, direct: DirectSocket | null = null) {
    this.#stream = stream;
    this.#direct = direct;
    stream.on('close', () => {
      this.#closed = true;
    });
  }

  get closed(): boolean {
    return this.#closed || this.#stream.destroyed;
  }

  /** True when replies may be offered to `trySendDirect`. */
  get direct(): boolean {
    return this.#direct !== null;
  }

  /**
   * Queues one message. `released` runs once the socket no longer refers to any
   * of the parts (written out, or dropped with a closed socket), so their
   * buffers may be reused. Resolves once the socket has room again (a reply
   * that fits costs no pending promise: the hot path).
   */
  send(parts: readonly Uint8Array[], released?: () => void): Promise<void> {
    if (this.#held) {
      const held = this.#held;
      return new Promise<void>((resolve) => held.push({ parts, released, queued: resolve }));
    }
    return this.#queue(parts, released) ? Promise.resolve() : this.#drained();
  }

  /**
   * Sends a reply of `total` bytes straight to the socket when nothing is
   * queued on it: `transfer(fd)` sends it and returns the bytes the socket took
   * (null: it cannot, nothing sent). The reply's remaining bytes, when the
   * socket took fewer than all, come from `rest(sent)` and are queued before
   * any later reply. Returns null, having sent nothing, when the reply must go
   * the ordinary way (`send`).
   */
  trySendDirect(total: number, transfer: (socketFd: number) => number | null, rest: (sent: number) => Promise<ReplyMessage>): Promise<void> | null {
    if (this.#held || this.closed) return null;
    const fd = this.#direct?.idleFd() ?? null;
    if (fd === null) return null;
    let sent: number | null;
    try {
      sent = transfer(fd);
    } catch (e) {
      // The client is gone (EPIPE, ECONNRESET): the connection ends as with a failed stream write.
      this.#stream.destroy(e instanceof Error ? e : new Error(String(e)));
      return Promise.resolve();
    }
    if (sent === null) return null;
    this.directReplies++;
    if (sent >= total) return Promise.resolve();
    const held: HeldReply[] = [];
    this.#held = held;
    return rest(sent).then(
      (message) => this.#release(held, message),
      (e: unknown) => {
        // Part of the reply is on the wire: the stream cannot carry another reply after it.
        this.#stream.destroy(e instanceof Error ? e : new Error(String(e)));
        return this.#release(held, { parts: [] });
      },
    );
  }

  /** Queues the rest of a direct reply, then the replies held behind it, in order. */
  #release(held: HeldReply[], message: ReplyMessage): Promise<void> {
    this.#held = null;
    let room = this.#queue(message.parts, message.released);
    for (const h of held) room = this.#queue(h.parts, h.released) && room;
    const after = room ? Promise.resolve() : this.#drained();
    // The held senders resume as `send` would have let them: once the socket has room.
    void after.then(() => {
      for (const h of held) h.queued();
    });
    return after;
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
