/**
 * A write request's place in the order requests reach planning. Requests plan
 * in the order they entered: a sequential stream's requests must find the
 * record of the one before them to cancel its tail COW, and one that overtook
 * its predecessor (by taking a cached L2 table at once while the predecessor
 * still queued for it) made the predecessor wait for the tail COW instead.
 */
export class PlanTicket {
  #planned = false;
  #promise: Promise<void> | null = null;
  #resolve: (() => void) | null = null;

  get planned(): boolean {
    return this.#planned;
  }

  whenPlanned(): Promise<void> {
    if (this.#planned) return Promise.resolve();
    this.#promise ??= new Promise<void>((r) => (this.#resolve = r));
    return this.#promise;
  }

  markPlanned(): void {
    if (this.#planned) return;
    this.#planned = true;
    this.#resolve?.();
  }
}
