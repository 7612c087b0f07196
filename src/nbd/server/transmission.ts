import { Cmd, CmdFlag, EXTENDED_REQUEST_HEADER_LENGTH, MAX_PAYLOAD, NbdErrno, REQUEST_HEADER_LENGTH } from '../protocol/constants.js';
import { nbdErrnoOf } from '../protocol/errno.js';
import {
  encodeBlockStatusChunk,
  encodeBlockStatusExtChunk,
  encodeErrorChunk,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOffsetHoleChunk,
  encodeSimpleReply,
  type ReplyTo,
} from '../protocol/replies.js';
import {
  commandName,
  decodeExtendedRequestHeader,
  decodeRequestHeader,
  payloadLength,
  validateRequest,
  type RequestContext,
  type RequestHeader,
  type ValidRequest,
} from '../protocol/requests.js';
import { blockStatusReplies, readPieces, type ReadPiece } from './command-handlers.js';
import { InFlightBudget } from './in-flight.js';
import type { Agreement } from './negotiation.js';
import { ReadBuffers } from './read-buffers.js';
import type { ReplyWriter } from './reply-writer.js';
import { EndOfStream, type SocketReader } from './socket-reader.js';

export interface TransmissionLimits {
  /** Bytes of read and write payload in flight per connection. */
  readonly maxBytesInFlight: number;
  /** Requests in flight per connection. */
  readonly maxRequestsInFlight: number;
}

export const DEFAULT_LIMITS: TransmissionLimits = { maxBytesInFlight: 64 * 1024 * 1024, maxRequestsInFlight: 64 };

/** Idle READ buffers a connection keeps for reuse: nbdcopy's 64 requests of 256 KiB. */
const IDLE_READ_BUFFER_BYTES = 16 * 1024 * 1024;

/** What a reply needs to know about its request. */
interface Answering {
  readonly cookie: bigint;
  readonly type: number;
  /** The request's offset, echoed by extended reply headers. */
  readonly offset: bigint | number;
}

/** Observes failed requests (for logging); the server never throws them further. */
export type RequestErrorSink = (command: string, error: unknown) => void;

/**
 * The transmission phase of one connection: reads requests, runs them
 * concurrently within the in-flight budget and answers each as soon as it is
 * done (replies may be out of order). Returns when the client sends DISC or
 * leaves, when `reader` is stopped, or on a protocol error (thrown); in every
 * case only after all accepted requests were answered.
 */
export class Transmission {
  readonly #reader: SocketReader;
  readonly #writer: ReplyWriter;
  readonly #agreement: Agreement;
  readonly #budget: InFlightBudget;
  readonly #ctx: RequestContext;
  readonly #onError: RequestErrorSink;
  /** READ reply buffers, reused within the connection's in-flight byte budget. */
  readonly #buffers: ReadBuffers;

  constructor(io: { reader: SocketReader; writer: ReplyWriter }, agreement: Agreement, options: { limits?: TransmissionLimits; onError?: RequestErrorSink } = {}) {
    this.#reader = io.reader;
    this.#writer = io.writer;
    this.#agreement = agreement;
    const limits = options.limits ?? DEFAULT_LIMITS;
    this.#budget = new InFlightBudget({ maxBytes: limits.maxBytesInFlight, maxRequests: limits.maxRequestsInFlight });
    this.#onError = options.onError ?? (() => undefined);
    this.#buffers = new ReadBuffers(Math.min(limits.maxBytesInFlight, IDLE_READ_BUFFER_BYTES));
    const exp = agreement.export;
    this.#ctx = {
      exportSize: exp.size,
      transmissionFlags: exp.transmissionFlags(agreement.structuredReplies),
      structuredReplies: agreement.structuredReplies,
      metaContexts: agreement.metaContexts.length,
      extendedHeaders: agreement.extendedHeaders,
    };
  }

  async run(): Promise<void> {
    try {
      await this.#loop();
    } finally {
      await this.#budget.idle();
    }
  }

  async #loop(): Promise<void> {
    for (;;) {
      let header: RequestHeader;
      try {
        header = this.#agreement.extendedHeaders
          ? decodeExtendedRequestHeader(await this.#reader.read(EXTENDED_REQUEST_HEADER_LENGTH))
          : decodeRequestHeader(await this.#reader.read(REQUEST_HEADER_LENGTH));
      } catch (e) {
        if (e instanceof EndOfStream) return;
        throw e;
      }
      if (header.type === Cmd.DISC) return;
      const payloadLen = payloadLength(header);
      if (payloadLen > MAX_PAYLOAD) {
        // Too big to take in: read it through in bounded steps and refuse the request.
        await this.#reader.skip(payloadLen);
        await this.#replyError(header, NbdErrno.EINVAL, `WRITE of ${payloadLen} bytes exceeds the maximum payload ${MAX_PAYLOAD}`);
        continue;
      }
      const cost = header.type === Cmd.READ ? Math.min(header.length, MAX_PAYLOAD) : payloadLen;
      await this.#budget.acquire(cost);
      let payload: Buffer | null = null;
      try {
        if (payloadLen > 0) payload = await this.#reader.read(payloadLen);
      } catch (e) {
        this.#budget.release(cost);
        if (e instanceof EndOfStream) return;
        throw e;
      }
      const checked = validateRequest(header, this.#ctx);
      if (!checked.ok) {
        this.#budget.release(cost);
        await this.#replyError(header, checked.errno, checked.message);
        continue;
      }
      void this.#execute(checked, payload).finally(() => this.#budget.release(cost));
    }
  }

  async #execute(req: ValidRequest, payload: Buffer | null): Promise<void> {
    try {
      // The gate lets the export switch nodes between requests, never during one.
      await this.#agreement.export.gate.run(() => this.#dispatch(req, payload));
    } catch (e) {
      this.#onError(commandName(req.type), e);
      const message = e instanceof Error ? e.message : String(e);
      await this.#replyError(req, nbdErrnoOf(e), message);
    }
  }

  async #dispatch(req: ValidRequest, payload: Buffer | null): Promise<void> {
    const node = this.#agreement.export.node;
    const fua = (req.flags & CmdFlag.FUA) !== 0;
    switch (req.type) {
      case Cmd.READ:
        return this.#read(req);
      case Cmd.WRITE:
        await node.write(req.offset, payload ?? new Uint8Array(0), { fua });
        return this.#replyOk(req);
      case Cmd.FLUSH:
        await node.flush();
        return this.#replyOk(req);
      case Cmd.TRIM:
        await node.discard(req.offset, req.length);
        if (fua) await node.flush();
        return this.#replyOk(req);
      case Cmd.WRITE_ZEROES:
        await node.writeZeroes(req.offset, req.length, {
          fua,
          mayUnmap: (req.flags & CmdFlag.NO_HOLE) === 0,
          fastZero: (req.flags & CmdFlag.FAST_ZERO) !== 0,
        });
        return this.#replyOk(req);
      case Cmd.CACHE:
        // A prefetch hint with no effect on data: vdisk keeps no data cache to warm.
        return this.#replyOk(req);
      case Cmd.BLOCK_STATUS:
        return this.#blockStatus(req);
      default:
        return this.#replyError(req, NbdErrno.EINVAL, `unknown ${commandName(req.type)}`);
    }
  }

  async #read(req: ValidRequest): Promise<void> {
    const node = this.#agreement.export.node;
    const buffers = this.#buffers;
    if (!this.#agreement.structuredReplies) {
      const data = buffers.take(req.length);
      try {
        await node.read(req.offset, data);
      } catch (e) {
        buffers.give(data);
        throw e;
      }
      return this.#writer.send([encodeSimpleReply(req.cookie, 0), data], () => buffers.give(data));
    }
    const to = this.#to(req);
    if (req.length === 0) return this.#writer.send([encodeNoneChunk(to)]);
    let taken: Uint8Array | null = null;
    const giveBack = (): void => {
      if (taken) buffers.give(taken);
    };
    let pieces: ReadPiece[];
    try {
      pieces = await readPieces(node, req, (req.flags & CmdFlag.DF) !== 0, (n) => (taken = buffers.take(n)));
    } catch (e) {
      giveBack();
      throw e;
    }
    const parts: Uint8Array[] = [];
    pieces.forEach((p, i) => {
      const done = i === pieces.length - 1;
      if (p.kind === 'hole') parts.push(encodeOffsetHoleChunk(to, { offset: p.offset, holeLength: p.length, done }));
      else parts.push(encodeOffsetDataHeader(to, { offset: p.offset, dataLength: p.data.byteLength, done }), p.data);
    });
    return this.#writer.send(parts, giveBack);
  }

  async #blockStatus(req: ValidRequest): Promise<void> {
    if (req.length === 0) return this.#replyError(req, NbdErrno.EINVAL, 'BLOCK_STATUS of length 0');
    const node = this.#agreement.export.node;
    const replies = await blockStatusReplies(node, req, this.#agreement.metaContexts);
    const to = this.#to(req);
    // Extended headers allow only the 64-bit form (proto.md).
    const encode = this.#agreement.extendedHeaders ? encodeBlockStatusExtChunk : encodeBlockStatusChunk;
    const parts = replies.map((r, i) => encode(to, { contextId: r.context.id, extents: r.extents, done: i === replies.length - 1 }));
    return this.#writer.send(parts);
  }

  /** The cookie for compact chunks; cookie and request offset for extended ones. */
  #to(req: Answering): ReplyTo {
    return this.#agreement.extendedHeaders ? { cookie: req.cookie, requestOffset: BigInt(req.offset) } : req.cookie;
  }

  /** Simple replies are forbidden with extended headers: success is then a NONE chunk. */
  #replyOk(req: Answering): Promise<void> {
    if (this.#agreement.extendedHeaders) return this.#writer.send([encodeNoneChunk(this.#to(req))]);
    return this.#writer.send([encodeSimpleReply(req.cookie, 0)]);
  }

  /** READ and BLOCK_STATUS answer in structured form once it is agreed (everything does with extended headers); the rest may use a simple reply. */
  #replyError(req: Answering, errno: number, message: string): Promise<void> {
    const structured = this.#agreement.extendedHeaders || (this.#agreement.structuredReplies && (req.type === Cmd.READ || req.type === Cmd.BLOCK_STATUS));
    return this.#writer.send([structured ? encodeErrorChunk(this.#to(req), errno, message) : encodeSimpleReply(req.cookie, errno)]);
  }
}
