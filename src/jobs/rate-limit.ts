/**
 * Bytes-per-second limit, like QEMU's ratelimit: a job reports
 * what it copied and is told how long to wait before the next chunk. A speed of
 * 0 means unlimited. The speed may change at any time.
 */
export class RateLimit {
  /** How much work may run ahead of the average rate, in milliseconds of quota. */
  static readonly SLICE_MS = 100;
  #speed = 0;
  /** The time (ms) at which all work accounted so far is "paid for" at the current speed. */
  #due = 0;

  constructor(speed = 0) {
    this.speed = speed;
  }

  get speed(): number {
    return this.#speed;
  }

  set speed(bytesPerSecond: number) {
    this.#speed = Math.max(0, Math.floor(bytesPerSecond));
    this.#due = 0;
  }

  /**
   * Accounts `bytes` done at time `now` (ms) and returns the milliseconds to
   * wait before starting more work (0 when within the quota).
   */
  account(bytes: number, now: number): number {
    if (this.#speed === 0) return 0;
    this.#due = Math.max(this.#due, now) + (bytes * 1000) / this.#speed;
    return Math.max(0, this.#due - now - RateLimit.SLICE_MS);
  }
}
