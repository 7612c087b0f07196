/**
 * Admits requests to an export and lets the owner stop the flow for a moment:
 * `hold()` makes new requests wait and resolves once those already admitted
 * have finished; `release()` lets the waiting ones through in arrival order.
 * This is what switching an export to another node needs so that no request is
 * lost or reordered across the switch.
 */
export class RequestGate {
  #active = 0;
  #held = false;
  readonly #waiting: Array<() => void> = [];
  readonly #drained: Array<() => void> = [];

  /** Requests admitted and not yet finished. */
  get active(): number {
    return this.#active;
  }

  /**
   * Admits a request now if nothing holds or waits (pair with `leave()`);
   * false means call `enter()`. Saves the per-request promise on the hot path.
   */
  tryEnter(): boolean {
    if (this.#held || this.#waiting.length > 0) return false;
    this.#active += 1;
    return true;
  }

  /** Resolves when the request may run; pair with `leave()`. */
  enter(): Promise<void> {
    if (this.tryEnter()) return Promise.resolve();
    return new Promise<void>((resolve) =>
      this.#waiting.push(() => {
        this.#active += 1;
        resolve();
      }),
    );
  }

  leave(): void {
    this.#active -= 1;
    if (this.#active === 0) for (const r of this.#drained.splice(0)) r();
  }

  /** Stops admitting; resolves once every admitted request has finished. */
  hold(): Promise<void> {
    this.#held = true;
    if (this.#active === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#drained.push(resolve));
  }

  /** Admits the requests that waited, in the order they arrived. */
  release(): void {
    this.#held = false;
    for (const admit of this.#waiting.splice(0)) admit();
  }

  /** Runs `fn` as one admitted request. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (!this.tryEnter()) await this.enter();
    try {
      return await fn();
    } finally {
      this.leave();
    }
  }
}
