/**
 * Bytes a format writes to its host file: in memory, or a range of another
 * host file that the kernel copies (copy_file_range) without the data passing
 * through JS. The write paths slice and gather both kinds alike.
 */
import type { HostFile, HostRange } from './host-file.js';

/** Bytes to write: a buffer, or where they lie in another host file. */
export type Bytes = Uint8Array | HostRange;

export function isHostRange(b: Bytes): b is HostRange {
  return !(b instanceof Uint8Array);
}

/** Bytes [from, to) of `b`, without copying. */
export function sliceBytes(b: Bytes, from: number, to: number): Bytes {
  if (!isHostRange(b)) return b.subarray(from, to);
  return { file: b.file, offset: b.offset + from, length: to - from };
}

/** The bytes of a host range, read into memory. */
export async function readHostRange(src: HostRange): Promise<Uint8Array> {
  const buf = new Uint8Array(src.length);
  await src.file.read(buf, src.offset);
  return buf;
}

/**
 * Writes `parts` back to back from `offset`: buffers gathered into one
 * vectored write per run of them, host ranges copied by the file's copyFrom
 * (or read into memory where the file has none).
 */
export async function writeParts(file: HostFile, parts: readonly Bytes[], offset: number): Promise<void> {
  let at = offset;
  let run: Uint8Array[] = [];
  let runAt = offset;
  const flushRun = async (): Promise<void> => {
    if (run.length === 1 && run[0]) await file.write(run[0], runAt);
    else if (run.length > 1) await file.writev(run, runAt);
    run = [];
  };
  for (const p of coalesce(parts)) {
    if (!isHostRange(p)) {
      if (run.length === 0) runAt = at;
      run.push(p);
    } else {
      await flushRun();
      if (file.copyFrom) await file.copyFrom(p, at);
      else await file.write(await readHostRange(p), at);
    }
    at += p.length;
  }
  await flushRun();
}

/**
 * `parts` with host ranges that continue each other in one file merged, and
 * views that continue each other in one buffer: a write path slices per
 * cluster, and one copy per 64 KiB cluster cost a system call and a
 * thread-pool trip each.
 */
function coalesce(parts: readonly Bytes[]): Bytes[] {
  const out: Bytes[] = [];
  // Neighbouring views of one buffer (a chunk sliced per cluster) become one view: one write, not a vectored one.
  let views: { first: Uint8Array; length: number } | null = null;
  const endViews = (): void => {
    if (views === null) return;
    const { first, length } = views;
    out.push(length === first.length ? first : new Uint8Array(first.buffer, first.byteOffset, length));
    views = null;
  };
  for (const p of parts) {
    if (!isHostRange(p)) {
      if (views !== null && views.first.buffer === p.buffer && views.first.byteOffset + views.length === p.byteOffset) views.length += p.length;
      else {
        endViews();
        views = { first: p, length: p.length };
      }
      continue;
    }
    endViews();
    const last = out[out.length - 1];
    if (last && isHostRange(last) && last.file === p.file && last.offset + last.length === p.offset) {
      out[out.length - 1] = { file: p.file, offset: last.offset, length: last.length + p.length };
    } else {
      out.push(p);
    }
  }
  endViews();
  return out;
}
