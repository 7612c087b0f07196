/**
 * A FIFO async mutex. Used per metadata table (one L2 table, one refcount block,
 * one BAT page), never for a whole image.
 */
export class AsyncLock {
  #locked = false;
  readonly #waiters: Array<() => void> = [];

  get locked(): boolean {
    return this.#locked;
  }

  /** Waits for the lock; returns the function that releases it. */
  async acquire(): Promise<() => void> {
    if (!this.#locked) {
      this.#locked = true;
      return this.#releaser();
    }
    await new Promise<void>((resolve) => this.#waiters.push(resolve));
    return this.#releaser();
  }

  /** Runs `fn` while holding the lock. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.acquire();
    try {
      return await fn();
    } finally {
      release();
    }
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.shift();
      if (next) next();
      else this.#locked = false;
    };
  }
}
