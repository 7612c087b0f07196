/**
 * Bounds the work a connection has accepted and not yet answered: at most
 * `maxRequests` requests and `maxBytes` bytes of payload (read or write). A
 * single request larger than `maxBytes` is admitted when nothing else is in
 * flight, so every valid request can make progress.
 */
export class InFlightBudget {
  readonly #maxBytes: number;
  readonly #maxRequests: number;
  #bytes = 0;
  #requests = 0;
  readonly #waiters: Array<{ cost: number; resolve: () => void }> = [];
  readonly #idleWaiters: Array<() => void> = [];

  constructor(options: { readonly maxBytes: number; readonly maxRequests: number }) {
    this.#maxBytes = options.maxBytes;
    this.#maxRequests = options.maxRequests;
  }

  get requests(): number {
    return this.#requests;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Takes `cost` now if it fits and nobody waits; false means call `acquire`. Saves a promise per request. */
  tryAcquire(cost: number): boolean {
    if (this.#waiters.length > 0 || !this.#fits(cost)) return false;
    this.#take(cost);
    return true;
  }

  async acquire(cost: number): Promise<void> {
    if (this.tryAcquire(cost)) return;
    await new Promise<void>((resolve) => this.#waiters.push({ cost, resolve }));
  }

  release(cost: number): void {
    this.#bytes -= cost;
    this.#requests -= 1;
    while (this.#waiters.length > 0) {
      const w = this.#waiters[0];
      if (!w || !this.#fits(w.cost)) break;
      this.#waiters.shift();
      this.#take(w.cost);
      w.resolve();
    }
    if (this.#requests === 0) for (const r of this.#idleWaiters.splice(0)) r();
  }

  /** Resolves when nothing is in flight. */
  idle(): Promise<void> {
    if (this.#requests === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  #fits(cost: number): boolean {
    if (this.#requests === 0) return true;
    return this.#requests < this.#maxRequests && this.#bytes + cost <= this.#maxBytes;
  }

  #take(cost: number): void {
    this.#bytes += cost;
    this.#requests += 1;
  }
}
