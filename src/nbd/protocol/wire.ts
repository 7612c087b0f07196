import { VdiskError } from '../../errors.js';

/** A DataView over exactly the bytes of `buf`. */
export function viewOf(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** A protocol violation by the peer: the message says what was wrong and with which value. */
export function protocolError(message: string, field?: string): VdiskError {
  return new VdiskError('EINVAL', `NBD protocol error: ${message}`, field === undefined ? {} : { field });
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** Decodes a protocol string: valid UTF-8, no NUL. Returns null when it is not one. */
export function decodeString(bytes: Uint8Array): string | null {
  if (bytes.includes(0)) return null;
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    return null;
  }
}

export function encodeString(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}
