import { CmdFlag } from '../protocol/constants.js';
import {
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOffsetHoleChunk,
  offsetDataHeaderLength,
  SIMPLE_REPLY_LENGTH,
  writeOffsetDataHeader,
  writeSimpleReply,
  type ReplyTo,
} from '../protocol/replies.js';
import type { ValidRequest } from '../protocol/requests.js';
import { readPieces, readsAsOnePiece, type ReadPiece } from './command-handlers.js';
import type { NbdExport } from './export.js';
import type { KnownData } from './known-data.js';
import type { PayloadBuffers } from './payload-buffers.js';

/** What READ replies of one connection work with. */
export interface ReadRepliesIo {
  /** Read its `node` only while the request is admitted by the export's gate. */
  readonly export: NbdExport;
  readonly structured: boolean;
  readonly buffers: PayloadBuffers;
  readonly known: KnownData;
  /** Queues a reply; `released` runs once the socket is done with its parts. Resolves when the reply counts as sent. */
  readonly send: (parts: readonly Uint8Array[], released?: () => void) => Promise<void>;
}

/**
 * Reads and answers the READ requests of one connection: data in pooled
 * buffers with the reply header in front, holes as OFFSET_HOLE chunks where
 * structured replies allow them.
 */
export class ReadReplies {
  readonly #io: ReadRepliesIo;

  constructor(io: ReadRepliesIo) {
    this.#io = io;
  }

  /** Answers `req`; `to` addresses its chunks when structured replies are agreed. */
  answer(req: ValidRequest, to: ReplyTo): Promise<void> {
    if (!this.#io.structured) return this.#readWhole(req, SIMPLE_REPLY_LENGTH, (into) => writeSimpleReply(into, req.cookie, 0));
    if (req.length === 0) return this.#io.send([encodeNoneChunk(to)]);
    const oneChunk = (req.flags & CmdFlag.DF) !== 0;
    const headerLength = offsetDataHeaderLength(to);
    if (readsAsOnePiece(req, oneChunk, this.#io.known, this.#io.export.node.zeroingEpoch)) {
      return this.#readWhole(req, headerLength, (into) => writeOffsetDataHeader(into, to, { offset: req.offset, dataLength: req.length, done: true }));
    }
    return this.#readSparse(req, { to, headerLength, oneChunk });
  }

  /**
   * A READ answered with one piece of data, read without the map: the reply
   * header goes in front of the data in one pooled buffer, so the reply is one
   * socket write with no separate header allocation.
   */
  async #readWhole(req: ValidRequest, headerLength: number, writeHeader: (into: Uint8Array) => void): Promise<void> {
    const buffers = this.#io.buffers;
    const buf = buffers.take(headerLength + req.length);
    try {
      await this.#io.export.node.read(req.offset, buf.subarray(headerLength));
    } catch (e) {
      buffers.give(buf);
      throw e;
    }
    writeHeader(buf);
    return this.#io.send([buf], () => buffers.give(buf));
  }

  /** A READ whose range the map may split into data and holes. */
  async #readSparse(req: ValidRequest, reply: { to: ReplyTo; headerLength: number; oneChunk: boolean }): Promise<void> {
    const { to, headerLength } = reply;
    const buffers = this.#io.buffers;
    const taken: { buf: Uint8Array | null } = { buf: null };
    const giveBack = (): void => {
      if (taken.buf) buffers.give(taken.buf);
    };
    const alloc = (n: number): Uint8Array => {
      taken.buf = buffers.take(headerLength + n);
      return taken.buf.subarray(headerLength);
    };
    let pieces: ReadPiece[];
    try {
      pieces = await readPieces(this.#io.export.node, req, { oneChunk: reply.oneChunk, alloc, known: this.#io.known });
    } catch (e) {
      giveBack();
      throw e;
    }
    const only = pieces.length === 1 ? pieces[0] : undefined;
    const whole = taken.buf;
    if (only?.kind === 'data' && whole && only.data.byteOffset === whole.byteOffset + headerLength) {
      writeOffsetDataHeader(whole, to, { offset: only.offset, dataLength: only.data.byteLength, done: true });
      return this.#io.send([whole.subarray(0, headerLength + only.data.byteLength)], giveBack);
    }
    const parts: Uint8Array[] = [];
    pieces.forEach((p, i) => {
      const done = i === pieces.length - 1;
      if (p.kind === 'hole') parts.push(encodeOffsetHoleChunk(to, { offset: p.offset, holeLength: p.length, done }));
      else parts.push(encodeOffsetDataHeader(to, { offset: p.offset, dataLength: p.data.byteLength, done }), p.data);
    });
    return this.#io.send(parts, giveBack);
  }
}
