/**
 * A byte sequence given as a list of buffers back to back (a vectored write):
 * copy or view a range of it without joining the buffers first.
 */

/** Copies bytes [from, to) of the concatenation of `parts` into `dst` at `at`. */
export function copyParts(parts: readonly Uint8Array[], from: number, to: number, dst: Uint8Array, at: number): void {
  let pos = 0;
  for (const p of parts) {
    const a = Math.max(from, pos);
    const b = Math.min(to, pos + p.length);
    if (a < b) dst.set(p.subarray(a - pos, b - pos), at + (a - from));
    pos += p.length;
    if (pos >= to) return;
  }
}

/** Views of bytes [from, to) of the concatenation of `parts`. */
export function sliceParts(parts: readonly Uint8Array[], from: number, to: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  for (const p of parts) {
    const a = Math.max(from, pos);
    const b = Math.min(to, pos + p.length);
    if (a < b) out.push(p.subarray(a - pos, b - pos));
    pos += p.length;
    if (pos >= to) break;
  }
  return out;
}

