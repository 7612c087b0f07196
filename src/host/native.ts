/**
 * Host calls Node lacks (fallocate, SEEK_DATA/SEEK_HOLE, OFD locks), from the
 * small N-API addon in native/. When the addon is not built, `nativeHost()`
 * returns null and callers use their portable fallbacks.
 */
export interface NativeHost {
  punchHole(fd: number, offset: number, length: number): boolean;
  zeroRange(fd: number, offset: number, length: number): boolean;
  allocate(fd: number, offset: number, length: number): boolean;
  /** Offset of the next data at or after `offset`, or null past the last data. */
  seekData(fd: number, offset: number): number | null;
  seekHole(fd: number, offset: number): number;
}

export function nativeHost(): NativeHost | null {
  return null;
}
