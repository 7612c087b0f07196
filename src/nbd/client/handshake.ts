/**
 * The client side of the fixed newstyle handshake: greeting, client flags,
 * STARTTLS (when asked), STRUCTURED_REPLY, SET_META_CONTEXT base:allocation,
 * then GO. Every server reply is bounded before it is read.
 */
import { VdiskError } from '../../errors.js';
import { ClientFlag, GREETING_LENGTH, HandshakeFlag, IHAVEOPT, Info, META_BASE_ALLOCATION, NBD_MAGIC, Opt, Rep } from '../protocol/constants.js';
import { decodeOptionReplyHeader, encodeExportRequest, encodeMetaContextRequest, encodeOptionHeader } from '../protocol/options.js';
import { decodeString, protocolError, viewOf } from '../protocol/wire.js';
import type { ReplyWriter } from '../server/reply-writer.js';
import type { SocketReader } from '../server/socket-reader.js';

/** Largest option reply we accept from a server. */
const MAX_OPTION_REPLY = 64 * 1024;

export interface ClientIo {
  reader: SocketReader;
  writer: ReplyWriter;
}

/** What the server granted. */
export interface Negotiated {
  readonly size: number;
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  /** NBD_OPT_EXTENDED_HEADERS was acknowledged: 32-byte requests and reply chunks. */
  readonly extendedHeaders: boolean;
  /** Ids of every metadata context the server selected, by name. */
  readonly contextIds: ReadonlyMap<string, number>;
  /** Context id of base:allocation, or null when the server has none. */
  readonly baseAllocationId: number | null;
  readonly blockSizes: { readonly minimum: number; readonly preferred: number; readonly maximum: number } | null;
}

interface OptionReply {
  readonly type: number;
  readonly data: Buffer;
}

async function readOptionReply(io: ClientIo, option: number): Promise<OptionReply> {
  const h = decodeOptionReplyHeader(await io.reader.read(20));
  if (h.option !== option) throw protocolError(`reply to option ${h.option} while waiting for option ${option}`, 'option');
  if (h.length > MAX_OPTION_REPLY) throw protocolError(`option reply of ${h.length} bytes`, 'option_length');
  return { type: h.replyType, data: await io.reader.read(h.length) };
}

function isError(type: number): boolean {
  return (type & 0x80000000) !== 0;
}

function optionFailure(what: string, reply: OptionReply): VdiskError {
  const text = decodeString(reply.data) ?? '';
  const code = reply.type === Rep.ERR_UNKNOWN ? 'ENOENT' : reply.type === Rep.ERR_TLS_REQD || reply.type === Rep.ERR_POLICY ? 'EPERM' : 'EIO';
  return new VdiskError(code, `NBD server refused ${what} (reply 0x${(reply.type >>> 0).toString(16)})${text ? `: ${text}` : ''}`, { field: 'nbd' });
}

/** Reads the greeting and sends the client flags. Returns nothing; throws on a server we cannot talk to. */
export async function greet(io: ClientIo): Promise<void> {
  const g = await io.reader.read(GREETING_LENGTH);
  const v = viewOf(g);
  if (v.getBigUint64(0) !== NBD_MAGIC) throw protocolError('bad greeting magic', 'greeting');
  if (v.getBigUint64(8) !== IHAVEOPT) throw protocolError('server does not speak the newstyle protocol', 'greeting');
  const flags = v.getUint16(16);
  if (!(flags & HandshakeFlag.FIXED_NEWSTYLE)) throw protocolError('server does not speak fixed newstyle', 'greeting');
  const mine = ClientFlag.FIXED_NEWSTYLE | (flags & HandshakeFlag.NO_ZEROES ? ClientFlag.NO_ZEROES : 0);
  const out = new Uint8Array(4);
  viewOf(out).setUint32(0, mine);
  await io.writer.send([out]);
}

/** Sends STARTTLS and waits for the ACK; the caller then wraps the socket. */
export async function requestStartTls(io: ClientIo): Promise<void> {
  await io.writer.send([encodeOptionHeader(Opt.STARTTLS)]);
  const r = await readOptionReply(io, Opt.STARTTLS);
  if (r.type !== Rep.ACK) throw optionFailure('STARTTLS', r);
}

/** What the client asks for beyond the export itself. */
export interface NegotiationWishes {
  /** Ask for NBD_OPT_EXTENDED_HEADERS first (falls back to structured replies when refused). */
  readonly extendedHeaders?: boolean;
  /** Metadata contexts to select; default base:allocation. */
  readonly contexts?: readonly string[];
}

/** (EXTENDED_HEADERS or STRUCTURED_REPLY), SET_META_CONTEXT and GO for `exportName`. */
export async function negotiateExport(io: ClientIo, exportName: string, wishes: NegotiationWishes = {}): Promise<Negotiated> {
  let extendedHeaders = false;
  if (wishes.extendedHeaders) {
    await io.writer.send([encodeOptionHeader(Opt.EXTENDED_HEADERS)]);
    const eh = await readOptionReply(io, Opt.EXTENDED_HEADERS);
    if (eh.type === Rep.ERR_TLS_REQD) throw optionFailure('EXTENDED_HEADERS', eh);
    extendedHeaders = eh.type === Rep.ACK;
  }
  let structuredReplies = extendedHeaders;
  if (!extendedHeaders) {
    await io.writer.send([encodeOptionHeader(Opt.STRUCTURED_REPLY)]);
    const sr = await readOptionReply(io, Opt.STRUCTURED_REPLY);
    if (isError(sr.type) && sr.type === Rep.ERR_TLS_REQD) throw optionFailure('STRUCTURED_REPLY', sr);
    structuredReplies = sr.type === Rep.ACK;
  }

  const contextIds = new Map<string, number>();
  if (structuredReplies) {
    await io.writer.send([encodeOptionHeader(Opt.SET_META_CONTEXT, encodeMetaContextRequest(exportName, wishes.contexts ?? [META_BASE_ALLOCATION]))]);
    for (;;) {
      const r = await readOptionReply(io, Opt.SET_META_CONTEXT);
      if (r.type === Rep.META_CONTEXT && r.data.byteLength >= 4) {
        const name = decodeString(r.data.subarray(4));
        if (name !== null) contextIds.set(name, r.data.readUInt32BE(0));
        continue;
      }
      // ACK ends the list; an error just means no block status.
      break;
    }
  }

  await io.writer.send([encodeOptionHeader(Opt.GO, encodeExportRequest(exportName, [Info.BLOCK_SIZE]))]);
  let size: number | null = null;
  let transmissionFlags = 0;
  let blockSizes: Negotiated['blockSizes'] = null;
  for (;;) {
    const r = await readOptionReply(io, Opt.GO);
    if (r.type === Rep.ACK) break;
    if (isError(r.type)) throw optionFailure(`export '${exportName}'`, r);
    if (r.type !== Rep.INFO || r.data.byteLength < 2) continue;
    const info = r.data.readUInt16BE(0);
    if (info === Info.EXPORT && r.data.byteLength === 12) {
      const big = r.data.readBigUInt64BE(2);
      if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError(`export size ${big} is too large`, 'size');
      size = Number(big);
      transmissionFlags = r.data.readUInt16BE(10);
    } else if (info === Info.BLOCK_SIZE && r.data.byteLength === 14) {
      blockSizes = { minimum: r.data.readUInt32BE(2), preferred: r.data.readUInt32BE(6), maximum: r.data.readUInt32BE(10) };
    }
  }
  if (size === null) throw protocolError('server finished GO without NBD_INFO_EXPORT', 'info');
  const baseAllocationId = contextIds.get(META_BASE_ALLOCATION) ?? null;
  return { size, transmissionFlags, structuredReplies, extendedHeaders, contextIds, baseAllocationId, blockSizes };
}
