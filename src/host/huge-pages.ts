/**
 * Large copy buffers on transparent huge pages.
 *
 * A copy buffer is touched whole the first time it is filled, and each 4 KiB
 * page of it faults in then. Under the hypervisor of our test machines a fault
 * costs about 10 us, so a fresh 8 MiB buffer took 20 ms to fill the first time,
 * where the read itself took under 1 ms; on 2 MiB pages it faults four times.
 * The kernel gives huge pages to memory marked MADV_HUGEPAGE (the usual
 * transparent_hugepage setting, "madvise"), so the buffer is carved out of a
 * page-aligned area one huge page larger, starting on a 2 MiB boundary, and
 * marked before anything touches it. Without the addon, or where the kernel
 * refuses, it is an ordinary page-aligned buffer.
 */
import { pageAlignedBytes } from '../util/page-aligned.js';
import { nativeHost } from './native.js';

const HUGE_PAGE = 2 * 1024 * 1024;

/** `length` zeroed bytes, page-aligned, on huge pages where the host allows; worth it from 2 MiB on. */
export function hugePageBytes(length: number): Uint8Array {
  const advise = nativeHost()?.adviseHugePages;
  if (advise === undefined || length < HUGE_PAGE) return pageAlignedBytes(length);
  const area = pageAlignedBytes(length + HUGE_PAGE);
  const start = advise(area);
  return start < 0 ? area.subarray(0, length) : area.subarray(start, start + length);
}
