/** The big-endian unsigned 32-bit word of `bytes` at `at`, read byte by byte: no DataView made per read (callers check bounds; bytes past the end read 0). */
export function beWord(bytes: Uint8Array, at: number): number {
  return ((bytes[at] ?? 0) * 0x1000000 + (((bytes[at + 1] ?? 0) << 16) | ((bytes[at + 2] ?? 0) << 8) | (bytes[at + 3] ?? 0))) >>> 0;
}
