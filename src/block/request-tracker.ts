/**
 * Requests in flight on one node, so a job can (a) serialise its own copy of a
 * range against guest writes to it (`lockRange`, QEMU's serialising requests)
 * and (b) hold every request while it switches the node over (`quiesce`).
 *
 * Lock order: a job takes at most one range lock or one quiesce at a time, and
 * never holds either across a chunk boundary; guest requests take none, they
 * only wait.
 */

import { SlotSet, type Slotted } from '../util/slot-set.js';

interface Tracked extends Slotted {
  readonly offset: number;
  readonly end: number;
  readonly write: boolean;
  waiters: Array<() => void> | null;
}

interface RangeLock {
  readonly offset: number;
  readonly end: number;
  readonly released: Promise<void>;
}

/** A request admitted by the tracker; pass it back to `end()`. */
export type RequestTicket = Tracked;

function overlaps(a: { offset: number; end: number }, b: { offset: number; end: number }): boolean {
  return a.offset < b.end && b.offset < a.end;
}

function waitFor(t: Tracked): Promise<void> {
  return new Promise<void>((resolve) => (t.waiters ??= []).push(resolve));
}

export class RequestTracker {
  readonly #inFlight = new SlotSet<Tracked>();
  readonly #locks = new Set<RangeLock>();
  #gate: Promise<void> | null = null;

  /** Admits a request: waits while the node is quiesced or (for writes) while a lock covers the range. */
  async begin(offset: number, length: number, write: boolean): Promise<RequestTicket> {
    for (;;) {
      const t = this.tryBegin(offset, length, write);
      if (t) return t;
      if (this.#gate) {
        await this.#gate;
        continue;
      }
      const lock = this.#overlappingLock(offset, offset + length);
      if (lock) await lock.released;
    }
  }

  /**
   * Admits a request now, or returns null when `begin` would wait. Every guest
   * request passes here: the common case costs no promise.
   */
  tryBegin(offset: number, length: number, write: boolean): RequestTicket | null {
    if (this.#gate) return null;
    if (write && this.#locks.size > 0 && this.#overlappingLock(offset, offset + length)) return null;
    const t: Tracked = { offset, end: offset + length, write, waiters: null, slot: -1 };
    this.#inFlight.add(t);
    return t;
  }

  end(ticket: RequestTicket): void {
    this.#inFlight.delete(ticket);
    const waiters = ticket.waiters;
    ticket.waiters = null;
    if (waiters) for (const w of waiters) w();
  }

  /**
   * Excludes writes to [offset, offset+length): waits for those in flight,
   * makes new ones wait until the returned release is called.
   */
  async lockRange(offset: number, length: number): Promise<() => void> {
    const range = { offset, end: offset + length };
    for (let other = this.#overlappingLock(range.offset, range.end); other; other = this.#overlappingLock(range.offset, range.end)) {
      await other.released;
    }
    let release: () => void = () => undefined;
    const lock: RangeLock = { ...range, released: new Promise<void>((r) => (release = r)) };
    this.#locks.add(lock);
    for (const t of this.#inFlight.snapshot()) if (t.write && overlaps(t, range) && this.#inFlight.has(t)) await waitFor(t);
    return () => {
      this.#locks.delete(lock);
      release();
    };
  }

  /** Holds every new request and waits for those in flight; the returned function lets them go. */
  async quiesce(): Promise<() => void> {
    while (this.#gate) await this.#gate;
    let open: () => void = () => undefined;
    this.#gate = new Promise<void>((r) => (open = r));
    for (const t of this.#inFlight.snapshot()) if (this.#inFlight.has(t)) await waitFor(t);
    return () => {
      this.#gate = null;
      open();
    };
  }

  #overlappingLock(offset: number, end: number): RangeLock | undefined {
    for (const l of this.#locks) if (l.offset < end && offset < l.end) return l;
    return undefined;
  }
}
