/**
 * When a buffered write may run synchronously on the JS thread.
 *
 * ext4 answers RWF_NOWAIT on buffered writes with EOPNOTSUPP, so every write
 * would otherwise take a thread-pool round trip (two thread wake-ups and an
 * event-loop turn, 30-60 us on the 2-core machines we measure on) for what is
 * usually a page-cache copy of a few microseconds. A synchronous pwrite is
 * faster as long as the kernel does not make it wait: when the page cache is
 * over its dirty limit, balance_dirty_pages() sleeps the writer, and that sleep
 * would stall every other request on the event loop. So each synchronous call
 * is timed, and one that was slow sends writes back to the pool for a while,
 * longer after each consecutive slow call.
 */
import { monotonicMs } from '../util/clock.js';

/** A synchronous write slower than this was throttled or went to the device. */
export const SLOW_SYNC_WRITE_MS = 2;
/** How long writes stay on the pool after the first slow one; doubles up to the cap. */
const BACKOFF_FIRST_MS = 50;
const BACKOFF_MAX_MS = 2000;

export interface SyncWritePolicyOptions {
  /** Milliseconds, monotonic (tests pass a fake). */
  readonly clock?: () => number;
  /**
   * False for a file whose only user is one copy loop (convert): a throttled
   * write then stalls nothing but that loop, which would wait for the write
   * anyway, and on the pool an in-order write would queue behind the loop's reads.
   */
  readonly backOff?: boolean;
}

export class SyncWritePolicy {
  /** Largest write done synchronously; larger ones overlap better on the pool. */
  readonly maxBytes: number;
  #resumeAt = 0;
  #backoff = BACKOFF_FIRST_MS;
  readonly #clock: () => number;

  readonly #backOff: boolean;

  constructor(maxBytes: number, options: SyncWritePolicyOptions = {}) {
    this.maxBytes = maxBytes;
    this.#clock = options.clock ?? monotonicMs;
    this.#backOff = options.backOff ?? true;
  }

  /** True when a write of `length` bytes should be done synchronously now. */
  allows(length: number): boolean {
    return length > 0 && length <= this.maxBytes && (!this.#backOff || this.#clock() >= this.#resumeAt);
  }

  /** Times `write` (a synchronous call) and adapts to how long it took. */
  timed<T>(write: () => T): T {
    // Without back-off there is nothing to adapt: spare the two clock reads.
    if (!this.#backOff) return write();
    const start = this.#clock();
    try {
      return write();
    } finally {
      this.#record(this.#clock() - start);
    }
  }

  #record(elapsedMs: number): void {
    if (elapsedMs < SLOW_SYNC_WRITE_MS) {
      this.#backoff = BACKOFF_FIRST_MS;
      return;
    }
    const now = this.#clock();
    this.#resumeAt = now + this.#backoff;
    this.#backoff = Math.min(this.#backoff * 2, BACKOFF_MAX_MS);
  }
}
