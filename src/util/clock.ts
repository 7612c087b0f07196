/**
 * Milliseconds since an arbitrary start, monotonic. `performance.now()` is the
 * same clock, but its first use loads node:perf_hooks, 1.5-2.6 ms of a
 * command's start; process.hrtime is ready from the start.
 */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}
