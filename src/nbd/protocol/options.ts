import {
  IHAVEOPT,
  Info,
  MAX_STRING_LENGTH,
  OPTION_HEADER_LENGTH,
  OPTION_REPLY_MAGIC,
  Rep,
} from './constants.js';
import { decodeString, encodeString, protocolError, viewOf } from './wire.js';

/** The 16-byte header of a client option; `length` bytes of data follow it. */
export interface OptionHeader {
  readonly option: number;
  readonly length: number;
}

export function decodeOptionHeader(buf: Uint8Array): OptionHeader {
  if (buf.byteLength !== OPTION_HEADER_LENGTH) {
    throw protocolError(`option header must be ${OPTION_HEADER_LENGTH} bytes, got ${buf.byteLength}`, 'option');
  }
  const v = viewOf(buf);
  const magic = v.getBigUint64(0);
  if (magic !== IHAVEOPT) throw protocolError(`bad option magic 0x${magic.toString(16)}`, 'option_magic');
  return { option: v.getUint32(8), length: v.getUint32(12) };
}

export function encodeOptionHeader(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const buf = new Uint8Array(OPTION_HEADER_LENGTH + data.byteLength);
  const v = viewOf(buf);
  v.setBigUint64(0, IHAVEOPT);
  v.setUint32(8, option);
  v.setUint32(12, data.byteLength);
  buf.set(data, OPTION_HEADER_LENGTH);
  return buf;
}

/** Why an option's data was refused: answered with NBD_REP_ERR_INVALID (or TOO_BIG) and a message. */
export interface OptionDataError {
  readonly ok: false;
  readonly reply: number;
  readonly message: string;
}

function invalid(message: string): OptionDataError {
  return { ok: false, reply: Rep.ERR_INVALID, message };
}

/** NBD_OPT_INFO / NBD_OPT_GO data: export name and the info types asked for. */
export interface ExportRequest {
  readonly ok: true;
  readonly name: string;
  readonly infos: readonly number[];
}

/** Parses INFO/GO data: u32 name length, name, u16 count, count × u16 info type. */
export function parseExportRequest(data: Uint8Array): ExportRequest | OptionDataError {
  if (data.byteLength < 6) return invalid(`option data too short (${data.byteLength} bytes, need at least 6)`);
  const v = viewOf(data);
  const nameLength = v.getUint32(0);
  if (nameLength > data.byteLength - 6) return invalid(`export name length ${nameLength} exceeds option length ${data.byteLength}`);
  if (nameLength > MAX_STRING_LENGTH) return { ok: false, reply: Rep.ERR_TOO_BIG, message: `export name longer than ${MAX_STRING_LENGTH} bytes` };
  const name = decodeString(data.subarray(4, 4 + nameLength));
  if (name === null) return invalid('export name is not valid UTF-8 or contains NUL');
  const count = v.getUint16(4 + nameLength);
  const expected = 6 + nameLength + 2 * count;
  if (expected !== data.byteLength) return invalid(`option length ${data.byteLength} does not match ${count} info requests (expected ${expected})`);
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(v.getUint16(6 + nameLength + 2 * i));
  return { ok: true, name, infos };
}

export function encodeExportRequest(name: string, infos: readonly number[] = []): Uint8Array {
  const nameBytes = encodeString(name);
  const buf = new Uint8Array(6 + nameBytes.byteLength + 2 * infos.length);
  const v = viewOf(buf);
  v.setUint32(0, nameBytes.byteLength);
  buf.set(nameBytes, 4);
  v.setUint16(4 + nameBytes.byteLength, infos.length);
  infos.forEach((t, i) => v.setUint16(6 + nameBytes.byteLength + 2 * i, t));
  return buf;
}

/** NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT data. */
export interface MetaContextRequest {
  readonly ok: true;
  readonly exportName: string;
  readonly queries: readonly string[];
}

/** Parses u32 export name length, name, u32 query count, then count × (u32 length, query). */
export function parseMetaContextRequest(data: Uint8Array): MetaContextRequest | OptionDataError {
  const v = viewOf(data);
  if (data.byteLength < 8) return invalid(`option data too short (${data.byteLength} bytes, need at least 8)`);
  const nameLength = v.getUint32(0);
  if (nameLength > data.byteLength - 8) return invalid(`export name length ${nameLength} exceeds option length ${data.byteLength}`);
  if (nameLength > MAX_STRING_LENGTH) return { ok: false, reply: Rep.ERR_TOO_BIG, message: `export name longer than ${MAX_STRING_LENGTH} bytes` };
  const exportName = decodeString(data.subarray(4, 4 + nameLength));
  if (exportName === null) return invalid('export name is not valid UTF-8 or contains NUL');
  let pos = 4 + nameLength;
  const count = v.getUint32(pos);
  pos += 4;
  // Each query needs at least its 4-byte length: a count the data cannot hold is refused before any loop.
  if (count > (data.byteLength - pos) / 4) return invalid(`query count ${count} does not fit in option length ${data.byteLength}`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (pos + 4 > data.byteLength) return invalid(`query ${i} runs past the end of the option`);
    const len = v.getUint32(pos);
    pos += 4;
    if (len > data.byteLength - pos) return invalid(`query ${i} length ${len} runs past the end of the option`);
    if (len > MAX_STRING_LENGTH) return { ok: false, reply: Rep.ERR_TOO_BIG, message: `query ${i} longer than ${MAX_STRING_LENGTH} bytes` };
    const q = decodeString(data.subarray(pos, pos + len));
    if (q === null) return invalid(`query ${i} is not valid UTF-8 or contains NUL`);
    queries.push(q);
    pos += len;
  }
  if (pos !== data.byteLength) return invalid(`${data.byteLength - pos} trailing bytes after the queries`);
  return { ok: true, exportName, queries };
}

export function encodeMetaContextRequest(exportName: string, queries: readonly string[]): Uint8Array {
  const nameBytes = encodeString(exportName);
  const qBytes = queries.map(encodeString);
  const total = 8 + nameBytes.byteLength + qBytes.reduce((n, q) => n + 4 + q.byteLength, 0);
  const buf = new Uint8Array(total);
  const v = viewOf(buf);
  v.setUint32(0, nameBytes.byteLength);
  buf.set(nameBytes, 4);
  let pos = 4 + nameBytes.byteLength;
  v.setUint32(pos, qBytes.length);
  pos += 4;
  for (const q of qBytes) {
    v.setUint32(pos, q.byteLength);
    buf.set(q, pos + 4);
    pos += 4 + q.byteLength;
  }
  return buf;
}

/** An option reply: magic, option echoed, reply type, length, data. */
export function encodeOptionReply(option: number, replyType: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const buf = new Uint8Array(20 + data.byteLength);
  const v = viewOf(buf);
  v.setBigUint64(0, OPTION_REPLY_MAGIC);
  v.setUint32(8, option);
  v.setUint32(12, replyType >>> 0);
  v.setUint32(16, data.byteLength);
  buf.set(data, 20);
  return buf;
}

export interface OptionReply {
  readonly option: number;
  readonly replyType: number;
  readonly length: number;
}

/** Decodes the 20-byte option reply header (used by tests and a future client). */
export function decodeOptionReplyHeader(buf: Uint8Array): OptionReply {
  if (buf.byteLength !== 20) throw protocolError(`option reply header must be 20 bytes, got ${buf.byteLength}`);
  const v = viewOf(buf);
  const magic = v.getBigUint64(0);
  if (magic !== OPTION_REPLY_MAGIC) throw protocolError(`bad option reply magic 0x${magic.toString(16)}`);
  return { option: v.getUint32(8), replyType: v.getUint32(12), length: v.getUint32(16) };
}

/** An error reply with a human-readable message (truncated to the protocol's string limit). */
export function encodeOptionError(option: number, replyType: number, message: string): Uint8Array {
  const bytes = encodeString(message);
  return encodeOptionReply(option, replyType, bytes.subarray(0, Math.min(bytes.byteLength, MAX_STRING_LENGTH)));
}

/** NBD_REP_SERVER for LIST: u32 name length, name, description. */
export function encodeServerReply(option: number, name: string, description = ''): Uint8Array {
  const n = encodeString(name);
  const d = encodeString(description);
  const data = new Uint8Array(4 + n.byteLength + d.byteLength);
  viewOf(data).setUint32(0, n.byteLength);
  data.set(n, 4);
  data.set(d, 4 + n.byteLength);
  return encodeOptionReply(option, Rep.SERVER, data);
}

/** NBD_REP_META_CONTEXT: u32 context id, context name. */
export function encodeMetaContextReply(option: number, contextId: number, name: string): Uint8Array {
  const n = encodeString(name);
  const data = new Uint8Array(4 + n.byteLength);
  viewOf(data).setUint32(0, contextId);
  data.set(n, 4);
  return encodeOptionReply(option, Rep.META_CONTEXT, data);
}

/** NBD_REP_INFO / NBD_INFO_EXPORT: u64 size, u16 transmission flags. */
export function encodeInfoExport(option: number, size: number, transmissionFlags: number): Uint8Array {
  const data = new Uint8Array(12);
  const v = viewOf(data);
  v.setUint16(0, Info.EXPORT);
  v.setBigUint64(2, BigInt(size));
  v.setUint16(10, transmissionFlags);
  return encodeOptionReply(option, Rep.INFO, data);
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION: u16 type, string. */
export function encodeInfoString(option: number, infoType: number, text: string): Uint8Array {
  const s = encodeString(text);
  const data = new Uint8Array(2 + s.byteLength);
  viewOf(data).setUint16(0, infoType);
  data.set(s, 2);
  return encodeOptionReply(option, Rep.INFO, data);
}

export interface BlockSizes {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

/** NBD_INFO_BLOCK_SIZE: u16 type, u32 minimum, u32 preferred, u32 maximum payload. */
export function encodeInfoBlockSize(option: number, sizes: BlockSizes): Uint8Array {
  const data = new Uint8Array(14);
  const v = viewOf(data);
  v.setUint16(0, Info.BLOCK_SIZE);
  v.setUint32(2, sizes.minimum);
  v.setUint32(6, sizes.preferred);
  v.setUint32(10, sizes.maximum);
  return encodeOptionReply(option, Rep.INFO, data);
}

/** The answer to NBD_OPT_EXPORT_NAME: u64 size, u16 flags, and 124 zero bytes unless NO_ZEROES was agreed. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Uint8Array {
  const buf = new Uint8Array(noZeroes ? 10 : 134);
  const v = viewOf(buf);
  v.setBigUint64(0, BigInt(size));
  v.setUint16(8, transmissionFlags);
  return buf;
}
