/**
 * Runs `fast` (a synchronous check that may start the request at once, or
 * return null) and else `slow`. An error thrown by the check becomes a
 * rejection, and so does an error the slow path throws before it returns its
 * promise: callers of a promise-returning call never see it throw.
 */
export function fastOrSlow(fast: () => Promise<void> | null, slow: () => Promise<void>): Promise<void> {
  let started: Promise<void> | null;
  try {
    started = fast();
  } catch (e) {
    return Promise.reject(e);
  }
  if (started !== null) return started;
  // The slow path may be a plain function that starts its work in the call (the qcow2 write path).
  try {
    return slow();
  } catch (e) {
    return Promise.reject(e);
  }
}
