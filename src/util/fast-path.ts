/**
 * Runs `fast` (a synchronous check that may start the request at once, or
 * return null) and else `slow`. An error thrown by the check becomes a
 * rejection, as the slow path's own errors are: callers of a promise-returning
 * call never see it throw.
 */
export function fastOrSlow(fast: () => Promise<void> | null, slow: () => Promise<void>): Promise<void> {
  let started: Promise<void> | null;
  try {
    started = fast();
  } catch (e) {
    return Promise.reject(e);
  }
  return started ?? slow();
}
