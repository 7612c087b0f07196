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
import type { HostRange } from '../../host/host-file.js';
import type { ValidRequest } from '../protocol/requests.js';
import { readPieces, readsAsOnePiece, type ReadPiece } from './command-handlers.js';
import type { NbdExport } from './export.js';
import type { KnownData } from './known-data.js';
import type { PayloadBuffers } from './payload-buffers.js';
import type { ReplyMessage, ReplyWriter } from './reply-writer.js';

/** What READ replies of one connection work with. */
export interface ReadRepliesIo {
  /** Read its `node` only while the request is admitted by the export's gate. */
  readonly export: NbdExport;
  readonly structured: boolean;
  readonly buffers: PayloadBuffers;
  readonly known: KnownData;
  /** Queues a reply; `released` runs once the socket is done with its parts. Resolves when the reply counts as sent. */
  readonly send: (parts: readonly Uint8Array[], released?: () => void) => Promise<void>;
  /** ReplyWriter.trySendDirect, where the socket can take replies from host files directly. */
  readonly sendDirect?: ReplyWriter['trySendDirect'] | undefined;
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
    if (!this.#io.structured) {
      const simple = (into: Uint8Array): void => writeSimpleReply(into, req.cookie, 0);
      return this.#sendFromHost(req, SIMPLE_REPLY_LENGTH, simple) ?? this.#readWhole(req, SIMPLE_REPLY_LENGTH, simple);
    }
    if (req.length === 0) return this.#io.send([encodeNoneChunk(to)]);
    const oneChunk = (req.flags & CmdFlag.DF) !== 0;
    const headerLength = offsetDataHeaderLength(to);
    const dataHeader = (into: Uint8Array): void => writeOffsetDataHeader(into, to, { offset: req.offset, dataLength: req.length, done: true });
    const direct = this.#sendFromHost(req, headerLength, dataHeader);
    if (direct) return direct;
    if (readsAsOnePiece(req, oneChunk, this.#io.known, this.#io.export.node.zeroingEpoch)) return this.#readWhole(req, headerLength, dataHeader);
    return this.#readSparse(req, { to, headerLength, oneChunk });
  }

  /**
   * A READ of plain data in one run of a host file, when the socket has nothing
   * queued: the header and then the file's pages go to the socket by sendfile,
   * with no copy through a buffer (a qcow2 data cluster is data to the map, so
   * the reply is the one data chunk a read of it gives anyway). Null when the
   * reply must be read into a buffer instead.
   *
   * The socket holds the file's pages, not a copy of them, until the client
   * reads the reply: a write that lands on those pages meanwhile shows in it.
   * Only a request concurrent with this READ can do that (a write of the same
   * range, whose order against the READ NBD leaves open, or a discard or
   * zeroing of it that frees the cluster for reuse); a request the client
   * sends after reading the reply cannot. VDISK_NO_SENDFILE=1 turns the path off.
   */
  #sendFromHost(req: ValidRequest, headerLength: number, writeHeader: (into: Uint8Array) => void): Promise<void> | null {
    const sendDirect = this.#io.sendDirect;
    const node = this.#io.export.node;
    if (!sendDirect || !node.sendFromHost || req.length === 0) return null;
    // The header is made only once the socket is idle and the range is plain data: most declined replies cost nothing.
    const send = (socketFd: number, range: HostRange): number | null => {
      if (!range.file.sendToSocket) return null;
      const header = new Uint8Array(headerLength);
      writeHeader(header);
      return range.file.sendToSocket(socketFd, header, range.offset, range.length);
    };
    return sendDirect(
      headerLength + req.length,
      (socketFd) => node.sendFromHost?.(req.offset, req.length, (range) => send(socketFd, range)) ?? null,
      (sent) => this.#readRest(req, headerLength, writeHeader, sent),
    );
  }

  /** What a direct reply's socket did not take: the whole reply read into a buffer, from byte `sent` on. */
  async #readRest(req: ValidRequest, headerLength: number, writeHeader: (into: Uint8Array) => void, sent: number): Promise<ReplyMessage> {
    const buf = await this.#readReply(req, headerLength, writeHeader);
    return { parts: [buf.subarray(sent)], released: () => this.#io.buffers.give(buf) };
  }

  /**
   * A READ answered with one piece of data, read without the map: the reply
   * header goes in front of the data in one pooled buffer, so the reply is one
   * socket write with no separate header allocation.
   */
  async #readWhole(req: ValidRequest, headerLength: number, writeHeader: (into: Uint8Array) => void): Promise<void> {
    const buf = await this.#readReply(req, headerLength, writeHeader);
    return this.#io.send([buf], () => this.#io.buffers.give(buf));
  }

  /** The reply header and the data read after it, in one pooled buffer (given back here if the read fails). */
  async #readReply(req: ValidRequest, headerLength: number, writeHeader: (into: Uint8Array) => void): Promise<Uint8Array> {
    const buffers = this.#io.buffers;
    const buf = buffers.take(headerLength + req.length);
    try {
      await this.#io.export.node.read(req.offset, buf.subarray(headerLength));
    } catch (e) {
      buffers.give(buf);
      throw e;
    }
    writeHeader(buf);
    return buf;
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
