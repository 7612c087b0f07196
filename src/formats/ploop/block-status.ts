/**
 * Block status of one ploop image from its BAT alone: runs of clusters this
 * image holds (contiguous on the host, so one run maps to one host range) and
 * runs it does not (what lies below shows through; the block layer asks the
 * backing about those). The BAT has no zero mark, so nothing reads as `zero`.
 */
import type { LayerExtent } from '../driver.js';
import { entryToHost } from './layout.js';
import type { PloopState } from './state.js';

/** The extents of [offset, offset+length), which the caller has range-checked. */
export function batExtents(s: PloopState, offset: number, length: number): LayerExtent[] {
  const cs = s.layout.clusterSize;
  const out: LayerExtent[] = [];
  let runStart = offset;
  let runHost: number | null = null;
  const flush = (end: number): void => {
    if (end <= runStart) return;
    const len = end - runStart;
    out.push(
      runHost === null
        ? { length: len, allocated: false, zero: false, data: false }
        : { length: len, allocated: true, zero: false, data: true, hostOffset: runHost },
    );
  };
  let pos = offset;
  const end = offset + length;
  while (pos < end) {
    const index = Math.floor(pos / cs);
    const n = Math.min((index + 1) * cs, end) - pos;
    const entry = index < s.layout.batEntries ? s.bat.entry(index) : 0;
    const host = entry === 0 ? null : entryToHost(s.layout, entry) + (pos % cs);
    const continues = pos === runStart || (host === null ? runHost === null : runHost !== null && runHost + (pos - runStart) === host);
    if (!continues) {
      flush(pos);
      runStart = pos;
    }
    if (pos === runStart) runHost = host;
    pos += n;
  }
  flush(end);
  return out;
}
