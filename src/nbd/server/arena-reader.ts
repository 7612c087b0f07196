/**
 * Reads requests from a plain socket whose reads land in the reader's own
 * arenas (large buffers filled front to back, see user-buffer-socket.ts).
 * Consecutive reads lie next to each other in an arena, so a WRITE payload
 * that arrived in several reads is still one range of memory: it is handed
 * to the write as a view, with no copy, and the arena is reused once every
 * view into it was released and everything in it was read.
 *
 * Bounds: at most PINNED_ARENAS arenas are held by payloads in flight (past
 * that, payloads are copied out, as by SocketReader); bytes received and not
 * read are bounded as in SocketReader (the socket pauses past `highWater`, or
 * past the pending read's size).
 */
import type { Socket } from 'node:net';
import { VdiskError } from '../../errors.js';
import { PendingRead, skipInSteps, type RequestReader } from './socket-reader.js';
import { readIntoUserBuffers } from './user-buffer-socket.js';

/** One arena: 4 MiB holds sixteen 256 KiB WRITEs of nbdcopy with their headers. */
const ARENA_BYTES = 4 * 1024 * 1024;
/** A read gets at least this much room (a 256 KiB WRITE and the next header); with less the arena is full. */
const MIN_ROOM = 320 * 1024;
/** Payloads smaller than this are copied out: cheap, and they should not hold an arena. */
const MIN_VIEW = 64 * 1024;
/** Arenas that payloads in flight may hold at once. */
const PINNED_ARENAS = 4;
/** Full arenas kept for reuse. */
const SPARE_ARENAS = 2;

interface Arena {
  readonly bytes: Buffer;
  /** Views handed out and not released. */
  views: number;
  /** Every byte of it was filled (reads go to a newer arena). */
  full: boolean;
}

/** Bytes received and not read: [start, end) of an arena. */
interface Segment {
  readonly arena: Arena;
  start: number;
  end: number;
}

export class ArenaReader implements RequestReader {
  readonly #socket: Socket;
  readonly #highWater: number;
  readonly #segments: Segment[] = [];
  readonly #spare: Arena[] = [];
  /** Arenas by their memory, for `release`. */
  readonly #byMemory = new Map<ArrayBufferLike, Arena>();
  #arena: Arena;
  /** Where the next read lands in `#arena`. */
  #fill = 0;
  #buffered = 0;
  #pinned = 0;
  readonly #reads = new PendingRead<{ n: number; into: Uint8Array | undefined; keep: boolean; resolve: (b: Buffer) => void; reject: (e: Error) => void }>();

  private constructor(socket: Socket, highWater: number) {
    this.#socket = socket;
    this.#highWater = highWater;
    this.#arena = this.#newArena();
  }

  /**
   * Takes over reading `socket` from another reader (already detached), with
   * the bytes it had received and not read (`early`). Null, with the socket
   * unchanged, when the socket cannot read into user buffers.
   */
  static take(socket: Socket, early: Uint8Array, highWater = 1024 * 1024): ArenaReader | null {
    if (early.byteLength > ARENA_BYTES - MIN_ROOM) return null;
    const reader = new ArenaReader(socket, highWater);
    if (early.byteLength > 0) {
      // As if they were the first read; the socket's reads land after them.
      reader.#arena.bytes.set(early, 0);
      reader.#onRead(early.byteLength);
    }
    if (!readIntoUserBuffers(socket, () => reader.#nextBuffer(), (nread) => reader.#onRead(nread))) return null;
    socket.on('end', reader.#endListener);
    socket.on('close', reader.#closeListener);
    socket.on('error', reader.#errorListener);
    socket.resume();
    return reader;
  }

  readonly #endListener = (): void => this.#reads.end('the peer closed the connection');
  readonly #closeListener = (): void => this.#reads.end('the connection was closed');
  readonly #errorListener = (e: Error): void => this.#reads.end(`connection error: ${e.message}`);

  get buffered(): number {
    return this.#buffered;
  }

  tryRead(n: number, into?: Uint8Array): Buffer | null {
    if (this.#reads.waiting || this.#buffered < n) return null;
    return this.#take(n, into, false);
  }

  read(n: number, into?: Uint8Array): Promise<Buffer> {
    return this.#read(n, into, false);
  }

  tryReadPayload(n: number, into?: Uint8Array): Buffer | null {
    if (this.#reads.waiting || this.#buffered < n) return null;
    return this.#take(n, into, true);
  }

  readPayload(n: number, into?: Uint8Array): Promise<Buffer> {
    return this.#read(n, into, true);
  }

  release(payload: Uint8Array): void {
    const arena = this.#byMemory.get(payload.buffer);
    if (!arena || arena.views === 0) return;
    arena.views--;
    if (arena.views === 0) {
      this.#pinned--;
      this.#recycle(arena);
    }
  }

  skip(n: number): Promise<void> {
    return skipInSteps(this, n, this.#highWater);
  }

  /**
   * Later bytes are dropped as they arrive. The socket is not paused: for a
   * socket read into user buffers that would stop the reads, and the peer's
   * end of stream, which the connection waits for to close, would never come.
   */
  stop(reason: string): void {
    this.#reads.end(reason);
  }

  /** Arena reading is for the transmission phase only: nothing takes the socket over from it. */
  detach(): Buffer {
    throw new VdiskError('EINVAL', 'ArenaReader: a socket read into arenas is not handed on');
  }

  #read(n: number, into: Uint8Array | undefined, keep: boolean): Promise<Buffer> {
    if (this.#reads.waiting) return Promise.reject(new VdiskError('EINVAL', 'ArenaReader: concurrent reads'));
    if (this.#buffered >= n) return Promise.resolve(this.#take(n, into, keep));
    if (this.#reads.ended) return Promise.reject(this.#reads.ended);
    return new Promise<Buffer>((resolve, reject) => {
      this.#reads.waiting = { n, into, keep, resolve, reject };
      this.#socket.resume();
    });
  }

  /** The buffer the next socket read lands in (called by Node after each read). */
  #nextBuffer(): Uint8Array {
    if (ARENA_BYTES - this.#fill < MIN_ROOM) {
      const old = this.#arena;
      old.full = true;
      this.#arena = this.#spare.pop() ?? this.#newArena();
      this.#fill = 0;
      this.#recycle(old);
    }
    return this.#arena.bytes.subarray(this.#fill);
  }

  #onRead(nread: number): boolean {
    // After a stop the client's bytes are dropped, but reading goes on so its end of stream (and the socket's close) arrives.
    if (this.#reads.ended) return true;
    const arena = this.#arena;
    const last = this.#segments[this.#segments.length - 1];
    if (last && last.arena === arena && last.end === this.#fill) last.end += nread;
    else this.#segments.push({ arena, start: this.#fill, end: this.#fill + nread });
    this.#fill += nread;
    this.#buffered += nread;
    const p = this.#reads.waiting;
    if (p && this.#buffered >= p.n) {
      this.#reads.waiting = null;
      p.resolve(this.#take(p.n, p.into, p.keep));
    }
    const need = this.#reads.waiting ? Math.max(this.#reads.waiting.n, this.#highWater) : this.#highWater;
    return this.#buffered < need;
  }

  #take(n: number, into: Uint8Array | undefined, keep: boolean): Buffer {
    const first = this.#segments[0];
    let out: Buffer;
    if (first && first.end - first.start >= n && (!keep || this.#mayView(first.arena, n))) {
      out = first.arena.bytes.subarray(first.start, first.start + n);
      first.start += n;
      if (keep) this.#pin(first.arena);
      if (first.start === first.end) this.#dropFirst();
    } else {
      out = into && into.byteLength >= n ? Buffer.from(into.buffer, into.byteOffset, n) : Buffer.allocUnsafe(n);
      let pos = 0;
      while (pos < n) {
        const s = this.#segments[0];
        if (!s) break;
        const take = Math.min(s.end - s.start, n - pos);
        s.arena.bytes.copy(out, pos, s.start, s.start + take);
        pos += take;
        s.start += take;
        if (s.start === s.end) this.#dropFirst();
      }
    }
    this.#buffered -= n;
    if (this.#buffered < this.#highWater && !this.#reads.ended) this.#socket.resume();
    return out;
  }

  /** The first segment was read whole. */
  #dropFirst(): void {
    const s = this.#segments.shift();
    if (s) this.#recycle(s.arena);
  }

  /** A kept payload may be a view when it is large enough and the arenas held stay bounded. */
  #mayView(arena: Arena, n: number): boolean {
    return n >= MIN_VIEW && (arena.views > 0 || this.#pinned < PINNED_ARENAS);
  }

  #pin(arena: Arena): void {
    if (arena.views === 0) this.#pinned++;
    arena.views++;
  }

  /**
   * A full arena that nothing refers to any more is kept for reuse, or left to
   * the collector. Bytes handed out by `read` (not `readPayload`) may be in it:
   * they are the caller's until its next read, and a reused arena is written
   * only by a later socket read, after the caller has run.
   */
  #recycle(arena: Arena): void {
    if (!arena.full || arena.views > 0 || this.#segments.some((s) => s.arena === arena)) return;
    arena.full = false;
    if (this.#spare.length < SPARE_ARENAS) this.#spare.push(arena);
    else this.#byMemory.delete(arena.bytes.buffer);
  }

  #newArena(): Arena {
    const arena: Arena = { bytes: Buffer.allocUnsafeSlow(ARENA_BYTES), views: 0, full: false };
    this.#byMemory.set(arena.bytes.buffer, arena);
    return arena;
  }

}
