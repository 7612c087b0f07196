/**
 * Large reads of a copy loop's source (`vdisk convert`), sent to io_uring's
 * kernel workers (IOSQE_ASYNC) so that the page-cache copy of chunk n+1 runs on
 * the other core while the JS thread writes chunk n. Done inline, a 4 GiB
 * half-data convert spent ~0.3 s of its ~1.5 s on the JS thread copying
 * reads; with them on the workers, medians of 8 alternating runs: qcow2 →
 * raw 1.54-1.60 → 1.18-1.30 s, raw → qcow2 1.58-1.59 → 1.42-1.43 s
 * (qemu-img 0.97-1.01 and 1.00-1.01 s in the same runs).
 *
 * Not for the NBD server: its replies went no faster this way (nbdcopy reads,
 * 0.71-0.75x of qemu-nbd against 0.76-0.77x inline), the JS thread there
 * being busy with the sockets rather than with writes.
 */
import { HostRing } from './host-ring.js';

/**
 * Reads on the workers at once. Each may take a kernel thread of its own, and
 * on two cores more of them only preempt the JS thread (8 at once measured
 * slower); fewer than 2 leaves the worker idle while the JS thread, busy
 * writing, has not yet collected the completion and submitted the next.
 */
const IN_FLIGHT = 3;

/** Reads from this size go to the workers: smaller ones cost more to hand over (~60 µs) than to copy. */
export const WORKER_READ_MIN = 128 * 1024;

/** undefined: not opened yet; null: no ring here, or VDISK_WORKER_READS=0. */
let ring: HostRing | null | undefined;

/** The process's ring for such reads, opened on first use (it holds the event loop only while reads are in flight). */
export function workerReadRing(): HostRing | null {
  ring ??= process.env['VDISK_WORKER_READS'] === '0' ? null : HostRing.open({ maxInFlight: IN_FLIGHT });
  return ring;
}
