import { MAX_STRING_LENGTH, ReplyFlag, ReplyType, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from './constants.js';
import { encodeString, protocolError, viewOf } from './wire.js';

/** Simple reply header: magic, error, cookie. Read data (if any, and only on success) follows. */
export function encodeSimpleReply(cookie: bigint, error: number): Uint8Array {
  const buf = new Uint8Array(16);
  const v = viewOf(buf);
  v.setUint32(0, SIMPLE_REPLY_MAGIC);
  v.setUint32(4, error);
  v.setBigUint64(8, cookie);
  return buf;
}

interface ChunkHeader {
  readonly cookie: bigint;
  readonly type: number;
  readonly done: boolean;
  readonly payloadLength: number;
}

function writeChunkHeader(v: DataView, h: ChunkHeader): void {
  v.setUint32(0, STRUCTURED_REPLY_MAGIC);
  v.setUint16(4, h.done ? ReplyFlag.DONE : 0);
  v.setUint16(6, h.type);
  v.setBigUint64(8, h.cookie);
  v.setUint32(16, h.payloadLength);
}

/** NBD_REPLY_TYPE_NONE with DONE: the end of a structured reply with no more content. */
export function encodeNoneChunk(cookie: bigint): Uint8Array {
  const buf = new Uint8Array(20);
  writeChunkHeader(viewOf(buf), { cookie, type: ReplyType.NONE, done: true, payloadLength: 0 });
  return buf;
}

/**
 * The 28 bytes in front of an OFFSET_DATA chunk's data (chunk header + u64 offset).
 * The data itself is written after it without being copied.
 */
export function encodeOffsetDataHeader(cookie: bigint, chunk: { readonly offset: number; readonly dataLength: number; readonly done: boolean }): Uint8Array {
  const { offset, dataLength, done } = chunk;
  if (dataLength < 1 || dataLength > 0xffffffff - 8) throw protocolError(`OFFSET_DATA chunk of ${dataLength} bytes`);
  const buf = new Uint8Array(28);
  const v = viewOf(buf);
  writeChunkHeader(v, { cookie, type: ReplyType.OFFSET_DATA, done, payloadLength: 8 + dataLength });
  v.setBigUint64(20, BigInt(offset));
  return buf;
}

/** OFFSET_HOLE chunk: u64 offset, u32 hole size (non-zero). */
export function encodeOffsetHoleChunk(cookie: bigint, chunk: { readonly offset: number; readonly holeLength: number; readonly done: boolean }): Uint8Array {
  const { offset, holeLength, done } = chunk;
  if (holeLength < 1 || holeLength > 0xffffffff) throw protocolError(`OFFSET_HOLE chunk of ${holeLength} bytes`);
  const buf = new Uint8Array(32);
  const v = viewOf(buf);
  writeChunkHeader(v, { cookie, type: ReplyType.OFFSET_HOLE, done, payloadLength: 12 });
  v.setBigUint64(20, BigInt(offset));
  v.setUint32(28, holeLength);
  return buf;
}

/** ERROR chunk (always DONE here: it is the last chunk we send for a request). */
export function encodeErrorChunk(cookie: bigint, error: number, message = ''): Uint8Array {
  const all = encodeString(message);
  const msg = all.subarray(0, Math.min(all.byteLength, MAX_STRING_LENGTH));
  const buf = new Uint8Array(20 + 6 + msg.byteLength);
  const v = viewOf(buf);
  writeChunkHeader(v, { cookie, type: ReplyType.ERROR, done: true, payloadLength: 6 + msg.byteLength });
  v.setUint32(20, error);
  v.setUint16(24, msg.byteLength);
  buf.set(msg, 26);
  return buf;
}

export interface StatusDescriptor {
  /** Non-zero, at most 2^32 − 1. */
  readonly length: number;
  readonly flags: number;
}

/** BLOCK_STATUS chunk: u32 context id, then n × (u32 length, u32 flags), n ≥ 1. */
export function encodeBlockStatusChunk(
  cookie: bigint,
  chunk: { readonly contextId: number; readonly extents: readonly StatusDescriptor[]; readonly done: boolean },
): Uint8Array {
  const { contextId, extents, done } = chunk;
  if (extents.length === 0) throw protocolError('BLOCK_STATUS chunk needs at least one extent');
  const buf = new Uint8Array(20 + 4 + 8 * extents.length);
  const v = viewOf(buf);
  writeChunkHeader(v, { cookie, type: ReplyType.BLOCK_STATUS, done, payloadLength: 4 + 8 * extents.length });
  v.setUint32(20, contextId);
  extents.forEach((e, i) => {
    if (e.length < 1 || e.length > 0xffffffff) throw protocolError(`block status extent of ${e.length} bytes`);
    v.setUint32(24 + 8 * i, e.length);
    v.setUint32(28 + 8 * i, e.flags >>> 0);
  });
  return buf;
}

/** A decoded reply header, simple or structured (for tests and a future client). */
export type ReplyHeader =
  | { readonly kind: 'simple'; readonly error: number; readonly cookie: bigint }
  | {
      readonly kind: 'structured';
      readonly flags: number;
      readonly type: number;
      readonly cookie: bigint;
      readonly length: number;
    };

/** Bytes needed to decode the header starting with this magic. */
export function replyHeaderLength(magic: number): number {
  if (magic === SIMPLE_REPLY_MAGIC) return 16;
  if (magic === STRUCTURED_REPLY_MAGIC) return 20;
  throw protocolError(`bad reply magic 0x${magic.toString(16)}`);
}

export function decodeReplyHeader(buf: Uint8Array): ReplyHeader {
  if (buf.byteLength < 4) throw protocolError('reply header too short');
  const v = viewOf(buf);
  const magic = v.getUint32(0);
  const need = replyHeaderLength(magic);
  if (buf.byteLength !== need) throw protocolError(`reply header must be ${need} bytes, got ${buf.byteLength}`);
  if (magic === SIMPLE_REPLY_MAGIC) return { kind: 'simple', error: v.getUint32(4), cookie: v.getBigUint64(8) };
  return { kind: 'structured', flags: v.getUint16(4), type: v.getUint16(6), cookie: v.getBigUint64(8), length: v.getUint32(16) };
}
