/**
 * The aligned extents of the O_DIRECT writes in progress on one file. Writes
 * whose extents overlap go one after the other, so a read-modify-write of an
 * edge block never loses a neighbour's bytes (direct-file.ts).
 */

import { SlotSet, type Slotted } from '../util/slot-set.js';

/** The aligned extent [start, end) of a write in progress. */
export interface WriteClaim extends Slotted {
  readonly start: number;
  readonly end: number;
  /** Run when the write ends; made only when someone waits. */
  waiters: (() => void)[] | null;
}

export class WriteClaims {
  readonly #writing = new SlotSet<WriteClaim>();

  /** Registers a write on [start, end); the caller made sure nothing in progress overlaps it. */
  claim(start: number, end: number): WriteClaim {
    const claim: WriteClaim = { start, end, waiters: null, slot: -1 };
    this.#writing.add(claim);
    return claim;
  }

  release(claim: WriteClaim): void {
    this.#writing.delete(claim);
    const waiters = claim.waiters;
    claim.waiters = null;
    if (waiters !== null) for (const w of waiters) w();
  }

  /** A write in progress overlaps [start, end). */
  overlaps(start: number, end: number): boolean {
    for (let i = 0; i < this.#writing.size; i++) {
      const w = this.#writing.at(i);
      if (w.start < end && w.end > start) return true;
    }
    return false;
  }

  /** What to wait for before writing [start, end), or null when nothing overlaps it. */
  overlapping(start: number, end: number): Promise<unknown> | null {
    let waits: Promise<void>[] | null = null;
    for (let i = 0; i < this.#writing.size; i++) {
      const w = this.#writing.at(i);
      if (w.start < end && w.end > start) (waits ??= []).push(new Promise<void>((r) => (w.waiters ??= []).push(r)));
    }
    return waits === null ? null : Promise.all(waits);
  }
}
