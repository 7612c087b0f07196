import { Cmd, CmdFlag, EXTENDED_REQUEST_HEADER_LENGTH, MAX_PAYLOAD, NbdErrno, REQUEST_HEADER_LENGTH } from '../protocol/constants.js';
import { nbdErrnoOf } from '../protocol/errno.js';
import {
  encodeBlockStatusChunk,
  encodeBlockStatusExtChunk,
  encodeErrorChunk,
  encodeNoneChunk,
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
import { blockStatusReplies } from './command-handlers.js';
import { InFlightBudget } from './in-flight.js';
import type { Agreement } from './negotiation.js';
import { KnownData } from './known-data.js';
import { PayloadBuffers } from './payload-buffers.js';
import { ReadReplies } from './read-replies.js';
import type { ReplyWriter } from './reply-writer.js';
import { EndOfStream, type RequestReader } from './socket-reader.js';

export interface TransmissionLimits {
  /** Bytes of read and write payload in flight per connection. */
  readonly maxBytesInFlight: number;
  /** Requests in flight per connection. */
  readonly maxRequestsInFlight: number;
}

export const DEFAULT_LIMITS: TransmissionLimits = { maxBytesInFlight: 64 * 1024 * 1024, maxRequestsInFlight: 64 };

/** Idle payload buffers a connection keeps for reuse: nbdcopy's 64 requests of 256 KiB. */
const IDLE_BUFFER_BYTES = 16 * 1024 * 1024;

/**
 * Requests that arrived together are started without a pause; after this many
 * bytes of them the loop lets the replies of those done go out first (sent
 * only once their promise callbacks run), so the client is fed while the rest
 * are read.
 */
const YIELD_AFTER_BYTES = 1024 * 1024;

/** What an accepted request holds until it is answered: its share of the budget and its payload buffer, if pooled. */
interface Lease {
  readonly cost: number;
  buffer: Uint8Array | null;
  /** The WRITE payload, given back to the reader when the request ends. */
  payload: Uint8Array | null;
}

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
  readonly #reader: RequestReader;
  readonly #writer: ReplyWriter;
  readonly #agreement: Agreement;
  readonly #budget: InFlightBudget;
  readonly #ctx: RequestContext;
  readonly #onError: RequestErrorSink;
  /** READ reply and WRITE payload buffers, reused within the connection's in-flight byte budget. */
  readonly #buffers: PayloadBuffers;
  readonly #reads: ReadReplies;
  /** Where block status lately found data (see KnownData: it lapses with the node's zeroing epoch). */
  readonly #known = new KnownData();

  constructor(io: { reader: RequestReader; writer: ReplyWriter }, agreement: Agreement, options: { limits?: TransmissionLimits; onError?: RequestErrorSink } = {}) {
    this.#reader = io.reader;
    this.#writer = io.writer;
    this.#agreement = agreement;
    const limits = options.limits ?? DEFAULT_LIMITS;
    this.#budget = new InFlightBudget({ maxBytes: limits.maxBytesInFlight, maxRequests: limits.maxRequestsInFlight });
    this.#onError = options.onError ?? (() => undefined);
    this.#buffers = new PayloadBuffers(Math.min(limits.maxBytesInFlight, IDLE_BUFFER_BYTES));
    this.#reads = new ReadReplies({
      export: agreement.export,
      structured: agreement.structuredReplies,
      buffers: this.#buffers,
      known: this.#known,
      send: (parts, released) => this.#writer.send(parts, released),
      sendDirect: this.#writer.direct ? (total, transfer, rest) => this.#writer.trySendDirect(total, transfer, rest) : undefined,
    });
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
    const reader = this.#reader;
    const extended = this.#agreement.extendedHeaders;
    const headerLength = extended ? EXTENDED_REQUEST_HEADER_LENGTH : REQUEST_HEADER_LENGTH;
    let burst = 0;
    for (;;) {
      let header: RequestHeader;
      try {
        // Requests that arrived already are taken without a promise each: nbdcopy sends dozens in one burst.
        const raw = reader.tryRead(headerLength) ?? (await reader.read(headerLength));
        header = extended ? decodeExtendedRequestHeader(raw) : decodeRequestHeader(raw);
      } catch (e) {
        if (e instanceof EndOfStream) return;
        throw e;
      }
      if (header.type === Cmd.DISC) return;
      const payloadLen = payloadLength(header);
      if (payloadLen > MAX_PAYLOAD) {
        // Too big to take in: read it through in bounded steps and refuse the request.
        await reader.skip(payloadLen);
        await this.#replyError(header, NbdErrno.EINVAL, `WRITE of ${payloadLen} bytes exceeds the maximum payload ${MAX_PAYLOAD}`);
        continue;
      }
      const cost = header.type === Cmd.READ ? Math.min(header.length, MAX_PAYLOAD) : payloadLen;
      if (!this.#budget.tryAcquire(cost)) await this.#budget.acquire(cost);
      const lease: Lease = { cost, buffer: null, payload: null };
      let payload: Buffer | null = null;
      try {
        if (payloadLen > 0) payload = this.#readPayload(payloadLen, lease) ?? (await this.#awaitPayload(payloadLen, lease));
      } catch (e) {
        this.#budget.release(cost);
        if (e instanceof EndOfStream) return;
        throw e;
      }
      const checked = validateRequest(header, this.#ctx);
      if (!checked.ok) {
        this.#end(lease, true);
        await this.#replyError(header, checked.errno, checked.message);
        continue;
      }
      void this.#execute(checked, payload, lease);
      burst += cost;
      if (burst >= YIELD_AFTER_BYTES) {
        burst = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }

  /**
   * A WRITE payload that has arrived, or null. A payload spread over several
   * socket chunks is gathered into a reused buffer (a fresh 256 KiB one per
   * WRITE cost as much in allocation and garbage collection as the copy).
   */
  #readPayload(length: number, lease: Lease): Buffer | null {
    lease.buffer = this.#buffers.takePooled(length);
    const payload = this.#reader.tryReadPayload(length, lease.buffer ?? undefined);
    if (payload) this.#keepIfUsed(payload, lease);
    return payload;
  }

  async #awaitPayload(length: number, lease: Lease): Promise<Buffer> {
    const payload = await this.#reader.readPayload(length, lease.buffer ?? undefined);
    this.#keepIfUsed(payload, lease);
    return payload;
  }

  /** A payload within one socket chunk (or arena) is a view of it: the pooled buffer goes back unused. */
  #keepIfUsed(payload: Buffer, lease: Lease): void {
    lease.payload = payload;
    if (lease.buffer && payload.buffer !== lease.buffer.buffer) {
      this.#buffers.give(lease.buffer);
      lease.buffer = null;
    }
  }

  /** Ends a request's claim on the budget; its payload buffer is reused unless the request failed (a failed driver call may still hold it). */
  #end(lease: Lease, reuse: boolean): void {
    if (reuse) {
      if (lease.buffer) this.#buffers.give(lease.buffer);
      if (lease.payload) this.#reader.release(lease.payload);
    }
    this.#budget.release(lease.cost);
  }

  async #execute(req: ValidRequest, payload: Buffer | null, lease: Lease): Promise<void> {
    const gate = this.#agreement.export.gate;
    let ok = false;
    try {
      // The gate lets the export switch nodes between requests, never during one.
      if (!gate.tryEnter()) await gate.enter();
      try {
        await this.#dispatch(req, payload);
        ok = true;
      } finally {
        gate.leave();
      }
    } catch (e) {
      this.#onError(commandName(req.type), e);
      const message = e instanceof Error ? e.message : String(e);
      await this.#replyError(req, nbdErrnoOf(e), message);
    } finally {
      this.#end(lease, ok);
    }
  }

  #dispatch(req: ValidRequest, payload: Buffer | null): Promise<void> {
    switch (req.type) {
      case Cmd.READ:
        return this.#reads.answer(req, this.#to(req));
      case Cmd.BLOCK_STATUS:
        return this.#blockStatus(req);
      case Cmd.CACHE:
        // A prefetch hint with no effect on data: vdisk keeps no data cache to warm.
        return this.#replyOk(req);
      default:
        return this.#change(req, payload);
    }
  }

  /** The requests that change the disk (or flush it). */
  async #change(req: ValidRequest, payload: Buffer | null): Promise<void> {
    const node = this.#agreement.export.node;
    const fua = (req.flags & CmdFlag.FUA) !== 0;
    switch (req.type) {
      case Cmd.WRITE:
        await node.write(req.offset, payload ?? new Uint8Array(0), { fua });
        return this.#replyOk(req);
      case Cmd.FLUSH:
        await node.flush();
        return this.#replyOk(req);
      case Cmd.TRIM:
        this.#known.forget();
        await node.discard(req.offset, req.length);
        if (fua) await node.flush();
        return this.#replyOk(req);
      case Cmd.WRITE_ZEROES:
        this.#known.forget();
        await node.writeZeroes(req.offset, req.length, {
          fua,
          mayUnmap: (req.flags & CmdFlag.NO_HOLE) === 0,
          fastZero: (req.flags & CmdFlag.FAST_ZERO) !== 0,
        });
        return this.#replyOk(req);
      default:
        return this.#replyError(req, NbdErrno.EINVAL, `unknown ${commandName(req.type)}`);
    }
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
