/**
 * A set of short-lived items (requests in flight, write claims) that is added
 * to and deleted from on every request.
 *
 * A JS Set rebuilds its hash table as entries come and go: deleted entries
 * stay in the table until it fills, and a table that empties is shrunk. Each
 * rebuild allocates a new table. The Set itself is long-lived, so the new table
 * survives scavenges and is promoted. In sequential 4 KiB writes at depth 16
 * that was most of what the young generation promoted, about 180 KB per
 * scavenge. Here each item keeps its index in an array, a delete moves the last
 * item into the hole, and the array keeps its capacity, so nothing is
 * allocated once the set has reached its working size. Iteration order is not
 * insertion order.
 */

/** An item of a SlotSet: its index there, -1 while in none. One set at a time. */
export interface Slotted {
  slot: number;
}

export class SlotSet<T extends Slotted> {
  readonly #items: T[] = [];

  get size(): number {
    return this.#items.length;
  }

  add(item: T): void {
    if (this.has(item)) return;
    item.slot = this.#items.length;
    this.#items.push(item);
  }

  delete(item: T): boolean {
    if (!this.has(item)) return false;
    const i = item.slot;
    const last = this.#items.pop() as T;
    if (last !== item) {
      this.#items[i] = last;
      last.slot = i;
    }
    item.slot = -1;
    return true;
  }

  has(item: T): boolean {
    return item.slot >= 0 && this.#items[item.slot] === item;
  }

  /** The item at `index` (0 <= index < size), for loops that allocate nothing; adding or deleting moves items. */
  at(index: number): T {
    return this.#items[index] as T;
  }

  /** A copy of the items, to iterate over while the set may change. */
  snapshot(): T[] {
    return this.#items.slice();
  }
}
