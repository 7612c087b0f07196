import { ClientFlag, GREETING_LENGTH, HandshakeFlag, IHAVEOPT, NBD_MAGIC } from './constants.js';
import { protocolError, viewOf } from './wire.js';

/** The handshake flags this server offers. */
export const SERVER_HANDSHAKE_FLAGS = HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES;

/** The 18-byte newstyle greeting: NBDMAGIC, IHAVEOPT, handshake flags. */
export function encodeGreeting(handshakeFlags: number = SERVER_HANDSHAKE_FLAGS): Uint8Array {
  const buf = new Uint8Array(GREETING_LENGTH);
  const v = viewOf(buf);
  v.setBigUint64(0, NBD_MAGIC);
  v.setBigUint64(8, IHAVEOPT);
  v.setUint16(16, handshakeFlags);
  return buf;
}

export interface ClientFlags {
  readonly fixedNewstyle: boolean;
  readonly noZeroes: boolean;
}

/**
 * Decodes the client's 32-bit flags. The spec makes the server drop the
 * connection on flags it does not know or did not offer, so those throw.
 */
export function decodeClientFlags(buf: Uint8Array, offered: number = SERVER_HANDSHAKE_FLAGS): ClientFlags {
  if (buf.byteLength !== 4) throw protocolError(`client flags must be 4 bytes, got ${buf.byteLength}`, 'client_flags');
  const flags = viewOf(buf).getUint32(0);
  const known = ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES;
  const allowed = known & offered;
  if ((flags & ~allowed) >>> 0 !== 0) {
    throw protocolError(`unsupported client flags 0x${flags.toString(16)}`, 'client_flags');
  }
  return {
    fixedNewstyle: (flags & ClientFlag.FIXED_NEWSTYLE) !== 0,
    noZeroes: (flags & ClientFlag.NO_ZEROES) !== 0,
  };
}
