/**
 * Lets ordinary requests (read, write, flush, ...) run together and never wait for
 * one another, while a rare whole-image operation (check, resize, close) waits
 * for them to drain and keeps new ones out until it is done.
 */
import { AsyncLock } from '../../util/async-lock.js';

export class RequestGate {
  readonly #exclusive = new AsyncLock();
  #active = 0;
  #drained: (() => void) | null = null;

  /** Runs `fn` alongside other shared requests; waits only while an exclusive operation runs. */
  async shared<T>(fn: () => Promise<T>): Promise<T> {
    while (this.#exclusive.locked) await this.#exclusive.run(async () => undefined);
    this.#active++;
    try {
      return await fn();
    } finally {
      this.#active--;
      if (this.#active === 0 && this.#drained) this.#drained();
    }
  }

  /** Runs `fn` alone: after every running shared request has finished, before any new one starts. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#exclusive.run(async () => {
      if (this.#active > 0) {
        await new Promise<void>((resolve) => {
          this.#drained = resolve;
        });
        this.#drained = null;
      }
      return fn();
    });
  }
}
