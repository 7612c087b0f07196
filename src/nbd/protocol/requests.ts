import {
  Cmd,
  CmdFlag,
  EXTENDED_REQUEST_HEADER_LENGTH,
  EXTENDED_REQUEST_MAGIC,
  MAX_PAYLOAD,
  NbdErrno,
  REQUEST_HEADER_LENGTH,
  REQUEST_MAGIC,
  TransmissionFlag,
} from './constants.js';
import { protocolError, viewOf } from './wire.js';

/**
 * A transmission request header, compact (28 bytes, u32 length) or extended
 * (32 bytes, u64 length). Offset stays a bigint until it is range-checked; an
 * extended length above 2^53 is clamped to Number.MAX_SAFE_INTEGER (no export
 * is that large, so it fails the range check all the same).
 */
export interface RequestHeader {
  readonly flags: number;
  readonly type: number;
  readonly cookie: bigint;
  readonly offset: bigint;
  readonly length: number;
  /** Sent with the 32-byte extended header (NBD_OPT_EXTENDED_HEADERS). */
  readonly extended?: boolean;
}

/** Decodes a request header; a wrong magic is a protocol error after which the stream cannot be trusted. */
export function decodeRequestHeader(buf: Uint8Array): RequestHeader {
  if (buf.byteLength !== REQUEST_HEADER_LENGTH) {
    throw protocolError(`request header must be ${REQUEST_HEADER_LENGTH} bytes, got ${buf.byteLength}`, 'request');
  }
  const v = viewOf(buf);
  const magic = v.getUint32(0);
  if (magic !== REQUEST_MAGIC) throw protocolError(`bad request magic 0x${magic.toString(16)}`, 'request_magic');
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: v.getBigUint64(16),
    length: v.getUint32(24),
  };
}

export function encodeRequestHeader(req: RequestHeader): Uint8Array {
  const buf = new Uint8Array(REQUEST_HEADER_LENGTH);
  const v = viewOf(buf);
  v.setUint32(0, REQUEST_MAGIC);
  v.setUint16(4, req.flags);
  v.setUint16(6, req.type);
  v.setBigUint64(8, req.cookie);
  v.setBigUint64(16, req.offset);
  v.setUint32(24, req.length);
  return buf;
}

/** Decodes a 32-byte extended request header (after NBD_OPT_EXTENDED_HEADERS). */
export function decodeExtendedRequestHeader(buf: Uint8Array): RequestHeader {
  if (buf.byteLength !== EXTENDED_REQUEST_HEADER_LENGTH) {
    throw protocolError(`extended request header must be ${EXTENDED_REQUEST_HEADER_LENGTH} bytes, got ${buf.byteLength}`, 'request');
  }
  const v = viewOf(buf);
  const magic = v.getUint32(0);
  if (magic !== EXTENDED_REQUEST_MAGIC) throw protocolError(`bad extended request magic 0x${magic.toString(16)}`, 'request_magic');
  const length = v.getBigUint64(24);
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: v.getBigUint64(16),
    length: length > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(length),
    extended: true,
  };
}

export function encodeExtendedRequestHeader(req: RequestHeader): Uint8Array {
  const buf = new Uint8Array(EXTENDED_REQUEST_HEADER_LENGTH);
  const v = viewOf(buf);
  v.setUint32(0, EXTENDED_REQUEST_MAGIC);
  v.setUint16(4, req.flags);
  v.setUint16(6, req.type);
  v.setBigUint64(8, req.cookie);
  v.setBigUint64(16, req.offset);
  v.setBigUint64(24, BigInt(req.length));
  return buf;
}

/**
 * Bytes of payload that follow a request header on the wire: a compact
 * WRITE's length; with extended headers, the length of any request flagged
 * PAYLOAD_LEN (and of a WRITE, which must carry that flag: taking its length
 * as the payload either way keeps the stream in step).
 */
export function payloadLength(req: RequestHeader): number {
  if (req.type === Cmd.WRITE) return req.length;
  if (req.extended && req.flags & CmdFlag.PAYLOAD_LEN) return req.length;
  return 0;
}

/** What a connection has agreed to and what its export is, for checking requests. */
export interface RequestContext {
  readonly exportSize: number;
  /** The transmission flags sent to the client. */
  readonly transmissionFlags: number;
  readonly structuredReplies: boolean;
  /** Number of metadata contexts selected with SET_META_CONTEXT. */
  readonly metaContexts: number;
  /** NBD_OPT_EXTENDED_HEADERS was agreed. */
  readonly extendedHeaders?: boolean;
}

/** A request that passed every check, with its offset as a safe number. */
export interface ValidRequest {
  readonly ok: true;
  readonly type: number;
  readonly flags: number;
  readonly cookie: bigint;
  readonly offset: number;
  readonly length: number;
}

/** A request to answer with an error; the connection goes on. */
export interface RejectedRequest {
  readonly ok: false;
  readonly errno: number;
  readonly message: string;
}

const NAMES: Readonly<Record<number, string>> = {
  [Cmd.READ]: 'READ',
  [Cmd.WRITE]: 'WRITE',
  [Cmd.DISC]: 'DISC',
  [Cmd.FLUSH]: 'FLUSH',
  [Cmd.TRIM]: 'TRIM',
  [Cmd.CACHE]: 'CACHE',
  [Cmd.WRITE_ZEROES]: 'WRITE_ZEROES',
  [Cmd.BLOCK_STATUS]: 'BLOCK_STATUS',
};

export function commandName(type: number): string {
  return NAMES[type] ?? `command ${type}`;
}

function reject(errno: number, message: string): RejectedRequest {
  return { ok: false, errno, message };
}

/** Flags each command may carry, given what was advertised. */
function allowedFlags(type: number, ctx: RequestContext): number {
  const tf = ctx.transmissionFlags;
  // FUA must be accepted on every command once SEND_FUA is advertised.
  let allowed = tf & TransmissionFlag.SEND_FUA ? CmdFlag.FUA : 0;
  if (type === Cmd.READ && tf & TransmissionFlag.SEND_DF) allowed |= CmdFlag.DF;
  if (type === Cmd.WRITE_ZEROES) {
    allowed |= CmdFlag.NO_HOLE;
    if (tf & TransmissionFlag.SEND_FAST_ZERO) allowed |= CmdFlag.FAST_ZERO;
  }
  if (type === Cmd.BLOCK_STATUS) allowed |= CmdFlag.REQ_ONE;
  // PAYLOAD_LEN only describes a WRITE's data here: BLOCK_STATUS_PAYLOAD is not advertised.
  if (type === Cmd.WRITE && ctx.extendedHeaders) allowed |= CmdFlag.PAYLOAD_LEN;
  return allowed;
}

/**
 * Checks a request against the export and the negotiated features, with the
 * errors proto.md asks for: EINVAL for unknown commands and flags and for reads
 * past the end, ENOSPC for writes past the end, EPERM for writes to a read-only
 * export. Pure: the caller has already consumed any write payload.
 */
export function validateRequest(req: RequestHeader, ctx: RequestContext): ValidRequest | RejectedRequest {
  const name = commandName(req.type);
  const tf = ctx.transmissionFlags;
  if (!(req.type in NAMES)) return reject(NbdErrno.EINVAL, `unknown ${name}`);
  const badFlags = req.flags & ~allowedFlags(req.type, ctx);
  if (badFlags !== 0) return reject(NbdErrno.EINVAL, `${name}: flags 0x${badFlags.toString(16)} are not valid here`);

  const isWrite = req.type === Cmd.WRITE || req.type === Cmd.WRITE_ZEROES || req.type === Cmd.TRIM;
  if (isWrite && tf & TransmissionFlag.READ_ONLY) return reject(NbdErrno.EPERM, `${name} on a read-only export`);
  if (req.type === Cmd.TRIM && !(tf & TransmissionFlag.SEND_TRIM)) return reject(NbdErrno.EINVAL, 'TRIM not advertised');
  if (req.type === Cmd.WRITE_ZEROES && !(tf & TransmissionFlag.SEND_WRITE_ZEROES)) return reject(NbdErrno.EINVAL, 'WRITE_ZEROES not advertised');
  if (req.type === Cmd.FLUSH && !(tf & TransmissionFlag.SEND_FLUSH)) return reject(NbdErrno.EINVAL, 'FLUSH not advertised');
  if (req.type === Cmd.BLOCK_STATUS && ctx.metaContexts === 0) return reject(NbdErrno.EINVAL, 'BLOCK_STATUS without a selected metadata context');
  if ((req.type === Cmd.READ || req.type === Cmd.WRITE) && req.length > MAX_PAYLOAD) {
    return reject(NbdErrno.EINVAL, `${name} length ${req.length} exceeds the maximum payload ${MAX_PAYLOAD}`);
  }
  if (req.type === Cmd.READ && req.flags & CmdFlag.DF && req.length > MAX_PAYLOAD) {
    return reject(NbdErrno.EOVERFLOW, `READ with DF of ${req.length} bytes`);
  }
  if (req.type === Cmd.DISC || req.type === Cmd.FLUSH) {
    return { ok: true, type: req.type, flags: req.flags, cookie: req.cookie, offset: 0, length: 0 };
  }

  const end = req.offset + BigInt(req.length);
  if (end > BigInt(ctx.exportSize)) {
    const errno = req.type === Cmd.WRITE || req.type === Cmd.WRITE_ZEROES ? NbdErrno.ENOSPC : NbdErrno.EINVAL;
    return reject(errno, `${name} of ${req.length} bytes at offset ${req.offset} goes past the end of the export (size ${ctx.exportSize})`);
  }
  return { ok: true, type: req.type, flags: req.flags, cookie: req.cookie, offset: Number(req.offset), length: req.length };
}
