import type { Duplex } from 'node:stream';
import { VdiskError } from '../../errors.js';

/** Thrown by `read` when the peer closed the stream, or the reader was stopped, before `n` bytes arrived. */
export class EndOfStream extends VdiskError {
  constructor(message: string) {
    super('EIO', message);
  }
}

/**
 * What a connection reads its client's bytes from. Bytes from `read` and
 * `tryRead` are the caller's until its next read; a payload from `readPayload`
 * or `tryReadPayload` is the caller's until it gives it to `release`. With
 * `into`, bytes that must be gathered go there (its first `n` bytes).
 */
export interface RequestReader {
  /** Bytes received and not yet read. */
  readonly buffered: number;
  read(n: number, into?: Uint8Array): Promise<Buffer>;
  /** `read` without the promise: the bytes if they are all here already, else null. */
  tryRead(n: number, into?: Uint8Array): Buffer | null;
  readPayload(n: number, into?: Uint8Array): Promise<Buffer>;
  tryReadPayload(n: number, into?: Uint8Array): Buffer | null;
  /** A payload from `readPayload` is no longer used. */
  release(payload: Uint8Array): void;
  /** Reads and drops `n` bytes, holding at most a bounded part of them in memory. */
  skip(n: number): Promise<void>;
  /** Stops reading: a pending and every later read fail with EndOfStream. */
  stop(reason: string): void;
  /** Stops listening to the stream so another reader can take it over; returns the bytes received and not read. */
  detach(): Buffer;
}

/** The one read a reader may have waiting, and the end that fails it and every later read. */
export class PendingRead<R extends { readonly reject: (e: Error) => void }> {
  waiting: R | null = null;
  ended: EndOfStream | null = null;

  /** Fails the waiting read, and every later one, with EndOfStream(reason). */
  end(reason: string): void {
    if (this.ended) return;
    this.ended = new EndOfStream(reason);
    const p = this.waiting;
    if (p) {
      this.waiting = null;
      p.reject(this.ended);
    }
  }
}

/** Reads and drops `n` bytes from `reader`, `step` bytes at a time. */
export async function skipInSteps(reader: RequestReader, n: number, step: number): Promise<void> {
  for (let left = n; left > 0; left -= Math.min(left, step)) await reader.read(Math.min(left, step));
}

/**
 * Reads exact byte counts from a stream. Buffers at most `highWater` bytes (or
 * the size of the pending read, if larger) and pauses the stream beyond that,
 * so a client that sends faster than we work is slowed down by TCP, not by
 * our memory.
 */
export class SocketReader implements RequestReader {
  readonly #stream: Duplex;
  readonly #highWater: number;
  readonly #chunks: Buffer[] = [];
  #buffered = 0;
  readonly #reads = new PendingRead<{ n: number; into: Uint8Array | undefined; resolve: (b: Buffer) => void; reject: (e: Error) => void }>();

  /** `early`: bytes another reader received from `stream` and did not read; they come first. */
  constructor(stream: Duplex, highWater = 1024 * 1024, early?: Buffer) {
    this.#stream = stream;
    this.#highWater = highWater;
    if (early && early.byteLength > 0) {
      this.#chunks.push(early);
      this.#buffered = early.byteLength;
    }
    stream.on('data', this.#dataListener);
    stream.on('end', this.#endListener);
    stream.on('close', this.#closeListener);
    stream.on('error', this.#errorListener);
  }

  readonly #dataListener = (chunk: Buffer | string): void => this.#onData(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  readonly #endListener = (): void => this.#reads.end('the peer closed the connection');
  readonly #closeListener = (): void => this.#reads.end('the connection was closed');
  readonly #errorListener = (e: Error): void => this.#reads.end(`connection error: ${e.message}`);

  /**
   * Stops listening to the stream (so another reader, e.g. TLS, can take it
   * over) and returns the bytes received but not yet read. Later reads fail.
   */
  detach(): Buffer {
    this.#stream.pause();
    this.#stream.off('data', this.#dataListener);
    this.#stream.off('end', this.#endListener);
    this.#stream.off('close', this.#closeListener);
    this.#stream.off('error', this.#errorListener);
    const rest = Buffer.concat(this.#chunks.splice(0));
    this.#buffered = 0;
    this.#reads.end('the reader was detached');
    return rest;
  }

  /** Bytes received and not yet read. */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * Resolves with exactly `n` bytes. Only one read may be pending at a time.
   * Bytes that arrived in several chunks are gathered into `into` (its first
   * `n` bytes) when given, else into a fresh buffer; bytes within one chunk are
   * returned as a view of it, without a copy.
   */
  read(n: number, into?: Uint8Array): Promise<Buffer> {
    if (this.#reads.waiting) return Promise.reject(new VdiskError('EINVAL', 'SocketReader: concurrent reads'));
    const now = this.tryRead(n, into);
    if (now) return Promise.resolve(now);
    if (this.#reads.ended) return Promise.reject(this.#reads.ended);
    return new Promise<Buffer>((resolve, reject) => {
      this.#reads.waiting = { n, into, resolve, reject };
      this.#stream.resume();
    });
  }

  /** `read` without the promise: the bytes if they are all here already, else null. */
  tryRead(n: number, into?: Uint8Array): Buffer | null {
    if (this.#reads.waiting || this.#buffered < n) return null;
    return this.#take(n, into);
  }

  /** Every chunk is a fresh buffer, so a payload is simply a read. */
  readPayload(n: number, into?: Uint8Array): Promise<Buffer> {
    return this.read(n, into);
  }

  tryReadPayload(n: number, into?: Uint8Array): Buffer | null {
    return this.tryRead(n, into);
  }

  /** Nothing to do: the collector frees a chunk once no payload refers to it. */
  release(_payload: Uint8Array): void {}

  /** Reads and drops `n` bytes, holding at most one chunk of them in memory. */
  skip(n: number): Promise<void> {
    return skipInSteps(this, n, this.#highWater);
  }

  /** Stops reading: a pending and every later read fail with EndOfStream. */
  stop(reason: string): void {
    this.#stream.pause();
    this.#reads.end(reason);
  }

  #onData(chunk: Buffer): void {
    if (this.#reads.ended) return;
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
    const p = this.#reads.waiting;
    if (p && this.#buffered >= p.n) {
      this.#reads.waiting = null;
      p.resolve(this.#take(p.n, p.into));
    }
    const need = this.#reads.waiting ? Math.max(this.#reads.waiting.n, this.#highWater) : this.#highWater;
    if (this.#buffered >= need) this.#stream.pause();
  }


  #take(n: number, into: Uint8Array | undefined): Buffer {
    let out: Buffer;
    const first = this.#chunks[0];
    if (first && first.byteLength >= n) {
      out = first.subarray(0, n);
      if (first.byteLength === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      out = into && into.byteLength >= n ? Buffer.from(into.buffer, into.byteOffset, n) : Buffer.allocUnsafe(n);
      let pos = 0;
      while (pos < n) {
        const c = this.#chunks[0];
        if (!c) break;
        const take = Math.min(c.byteLength, n - pos);
        c.copy(out, pos, 0, take);
        pos += take;
        if (take === c.byteLength) this.#chunks.shift();
        else this.#chunks[0] = c.subarray(take);
      }
    }
    this.#buffered -= n;
    if (this.#buffered < this.#highWater && !this.#reads.ended) this.#stream.resume();
    return out;
  }
}
