import { VdiskError, type ErrorContext } from '../errors.js';

/**
 * Converts an on-disk 64-bit value to a JS number, refusing anything above
 * Number.MAX_SAFE_INTEGER so offsets never silently lose precision.
 */
export function toSafeNumber(value: bigint, what: string, context: ErrorContext = {}): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new VdiskError('EFBIG', `${what} 0x${value.toString(16)} is out of range (above 2^53)`, context);
  }
  return Number(value);
}

/** Reads a big-endian u64 as a checked number. */
export function readU64BE(buf: Uint8Array, pos: number, what: string, context: ErrorContext = {}): number {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return toSafeNumber(view.getBigUint64(pos, false), what, context);
}

/** Writes a non-negative safe integer as a big-endian u64. */
export function writeU64BE(buf: Uint8Array, pos: number, value: number): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  view.setBigUint64(pos, BigInt(value), false);
}

/** Formats a number as 0x-prefixed hex for error messages. */
export function hex(value: number | bigint): string {
  return `0x${value.toString(16)}`;
}
