import {
  EXTENDED_REPLY_HEADER_LENGTH,
  EXTENDED_REPLY_MAGIC,
  MAX_STRING_LENGTH,
  ReplyFlag,
  ReplyType,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
} from './constants.js';
import { encodeString, protocolError, viewOf } from './wire.js';

/** Length of a simple reply header. */
export const SIMPLE_REPLY_LENGTH = 16;

/** Simple reply header: magic, error, cookie. Read data (if any, and only on success) follows. */
export function encodeSimpleReply(cookie: bigint, error: number): Uint8Array {
  const buf = new Uint8Array(SIMPLE_REPLY_LENGTH);
  writeSimpleReply(buf, cookie, error);
  return buf;
}

/** Writes a simple reply header into the first 16 bytes of `into` (a READ reply's data can then follow in the same buffer). */
export function writeSimpleReply(into: Uint8Array, cookie: bigint, error: number): void {
  const v = viewOf(into);
  v.setUint32(0, SIMPLE_REPLY_MAGIC);
  v.setUint32(4, error);
  v.setBigUint64(8, cookie);
}

/**
 * Whom a chunk answers: a cookie (compact 20-byte structured chunk header), or
 * a cookie and the request's offset for the 32-byte extended header, which
 * echoes it (NBD_OPT_EXTENDED_HEADERS).
 */
export type ReplyTo = bigint | { readonly cookie: bigint; readonly requestOffset: bigint };

interface ChunkHeader {
  readonly to: ReplyTo;
  readonly type: number;
  readonly done: boolean;
  readonly payloadLength: number;
}

/** Length of the chunk header for `to`. */
export function chunkHeaderLength(to: ReplyTo): number {
  return typeof to === 'bigint' ? 20 : EXTENDED_REPLY_HEADER_LENGTH;
}

/** Allocates header + `payload` bytes, writes the header, returns the buffer and where the payload starts. */
function chunk(h: ChunkHeader): { buf: Uint8Array; v: DataView; at: number } {
  const at = chunkHeaderLength(h.to);
  const buf = new Uint8Array(at + h.payloadLength);
  const v = viewOf(buf);
  writeChunkHeader(v, h);
  return { buf, v, at };
}

function writeChunkHeader(v: DataView, h: ChunkHeader): void {
  v.setUint16(4, h.done ? ReplyFlag.DONE : 0);
  v.setUint16(6, h.type);
  if (typeof h.to === 'bigint') {
    v.setUint32(0, STRUCTURED_REPLY_MAGIC);
    v.setBigUint64(8, h.to);
    v.setUint32(16, h.payloadLength);
  } else {
    v.setUint32(0, EXTENDED_REPLY_MAGIC);
    v.setBigUint64(8, h.to.cookie);
    v.setBigUint64(16, h.to.requestOffset);
    v.setBigUint64(24, BigInt(h.payloadLength));
  }
}

/** NBD_REPLY_TYPE_NONE with DONE: the end of a structured reply with no more content. */
export function encodeNoneChunk(to: ReplyTo): Uint8Array {
  return chunk({ to, type: ReplyType.NONE, done: true, payloadLength: 0 }).buf;
}

/** An OFFSET_DATA chunk as its header sees it. */
interface OffsetData {
  readonly offset: number;
  readonly dataLength: number;
  readonly done: boolean;
}

/** Length of what precedes an OFFSET_DATA chunk's data: the chunk header and the u64 offset. */
export function offsetDataHeaderLength(to: ReplyTo): number {
  return chunkHeaderLength(to) + 8;
}

/**
 * The bytes in front of an OFFSET_DATA chunk's data (chunk header + u64 offset).
 * The data itself is written after it without being copied.
 */
export function encodeOffsetDataHeader(to: ReplyTo, piece: OffsetData): Uint8Array {
  const buf = new Uint8Array(offsetDataHeaderLength(to));
  writeOffsetDataHeader(buf, to, piece);
  return buf;
}

/** Writes the OFFSET_DATA header into the start of `into`, so the data can follow in the same buffer (one write per reply). */
export function writeOffsetDataHeader(into: Uint8Array, to: ReplyTo, piece: OffsetData): void {
  const { offset, dataLength, done } = piece;
  if (dataLength < 1 || dataLength > 0xffffffff - 8) throw protocolError(`OFFSET_DATA chunk of ${dataLength} bytes`);
  const v = viewOf(into);
  writeChunkHeader(v, { to, type: ReplyType.OFFSET_DATA, done, payloadLength: 8 + dataLength });
  v.setBigUint64(chunkHeaderLength(to), BigInt(offset));
}

/** OFFSET_HOLE chunk: u64 offset, u32 hole size (non-zero). */
export function encodeOffsetHoleChunk(to: ReplyTo, piece: { readonly offset: number; readonly holeLength: number; readonly done: boolean }): Uint8Array {
  const { offset, holeLength, done } = piece;
  if (holeLength < 1 || holeLength > 0xffffffff) throw protocolError(`OFFSET_HOLE chunk of ${holeLength} bytes`);
  const { buf, v, at } = chunk({ to, type: ReplyType.OFFSET_HOLE, done, payloadLength: 12 });
  v.setBigUint64(at, BigInt(offset));
  v.setUint32(at + 8, holeLength);
  return buf;
}

/** ERROR chunk (always DONE here: it is the last chunk we send for a request). */
export function encodeErrorChunk(to: ReplyTo, error: number, message = ''): Uint8Array {
  const all = encodeString(message);
  const msg = all.subarray(0, Math.min(all.byteLength, MAX_STRING_LENGTH));
  const { buf, v, at } = chunk({ to, type: ReplyType.ERROR, done: true, payloadLength: 6 + msg.byteLength });
  v.setUint32(at, error);
  v.setUint16(at + 4, msg.byteLength);
  buf.set(msg, at + 6);
  return buf;
}

export interface StatusDescriptor {
  /** Non-zero, at most 2^32 − 1. */
  readonly length: number;
  readonly flags: number;
}

/** BLOCK_STATUS chunk: u32 context id, then n × (u32 length, u32 flags), n ≥ 1. */
export function encodeBlockStatusChunk(
  to: ReplyTo,
  status: { readonly contextId: number; readonly extents: readonly StatusDescriptor[]; readonly done: boolean },
): Uint8Array {
  const { contextId, extents, done } = status;
  if (extents.length === 0) throw protocolError('BLOCK_STATUS chunk needs at least one extent');
  const { buf, v, at } = chunk({ to, type: ReplyType.BLOCK_STATUS, done, payloadLength: 4 + 8 * extents.length });
  v.setUint32(at, contextId);
  extents.forEach((e, i) => {
    if (e.length < 1 || e.length > 0xffffffff) throw protocolError(`block status extent of ${e.length} bytes`);
    v.setUint32(at + 4 + 8 * i, e.length);
    v.setUint32(at + 8 + 8 * i, e.flags >>> 0);
  });
  return buf;
}

/**
 * BLOCK_STATUS_EXT chunk (extended headers only): u32 context id, u32
 * descriptor count, then n × (u64 length, u64 status); 32-bit contexts leave
 * the status's high half zero.
 */
export function encodeBlockStatusExtChunk(
  to: ReplyTo,
  status: { readonly contextId: number; readonly extents: readonly StatusDescriptor[]; readonly done: boolean },
): Uint8Array {
  const { contextId, extents, done } = status;
  if (extents.length === 0) throw protocolError('BLOCK_STATUS_EXT chunk needs at least one extent');
  const { buf, v, at } = chunk({ to, type: ReplyType.BLOCK_STATUS_EXT, done, payloadLength: 8 + 16 * extents.length });
  v.setUint32(at, contextId);
  v.setUint32(at + 4, extents.length);
  extents.forEach((e, i) => {
    if (e.length < 1 || !Number.isSafeInteger(e.length)) throw protocolError(`block status extent of ${e.length} bytes`);
    v.setBigUint64(at + 8 + 16 * i, BigInt(e.length));
    v.setBigUint64(at + 16 + 16 * i, BigInt(e.flags >>> 0));
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
      /** Extended chunks only: the request offset echoed back. */
      readonly requestOffset?: bigint;
    };

/** Bytes needed to decode the header starting with this magic. */
export function replyHeaderLength(magic: number): number {
  if (magic === SIMPLE_REPLY_MAGIC) return 16;
  if (magic === STRUCTURED_REPLY_MAGIC) return 20;
  if (magic === EXTENDED_REPLY_MAGIC) return EXTENDED_REPLY_HEADER_LENGTH;
  throw protocolError(`bad reply magic 0x${magic.toString(16)}`);
}

export function decodeReplyHeader(buf: Uint8Array): ReplyHeader {
  if (buf.byteLength < 4) throw protocolError('reply header too short');
  const v = viewOf(buf);
  const magic = v.getUint32(0);
  const need = replyHeaderLength(magic);
  if (buf.byteLength !== need) throw protocolError(`reply header must be ${need} bytes, got ${buf.byteLength}`);
  if (magic === SIMPLE_REPLY_MAGIC) return { kind: 'simple', error: v.getUint32(4), cookie: v.getBigUint64(8) };
  if (magic === EXTENDED_REPLY_MAGIC) {
    const length = v.getBigUint64(24);
    if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError(`extended reply chunk of ${length} bytes`);
    return { kind: 'structured', flags: v.getUint16(4), type: v.getUint16(6), cookie: v.getBigUint64(8), requestOffset: v.getBigUint64(16), length: Number(length) };
  }
  return { kind: 'structured', flags: v.getUint16(4), type: v.getUint16(6), cookie: v.getBigUint64(8), length: v.getUint32(16) };
}
