/**
 * Aligned bounce buffers for O_DIRECT (DirectHostFile), by power-of-two size
 * class from one page up; cut from aligned slabs the owner supplies and
 * reused, never freed while the file is open.
 */
const PAGE = 4096;

export class BouncePool {
  readonly #free = new Map<number, Uint8Array[]>();
  #slab: Uint8Array | null = null;
  #used = 0;
  readonly #newSlab: () => Promise<Uint8Array>;

  constructor(newSlab: () => Promise<Uint8Array>) {
    this.#newSlab = newSlab;
  }

  static classOf(length: number): number {
    let c = PAGE;
    while (c < length) c *= 2;
    return c;
  }

  /** A pooled buffer of `length`'s class, or null when a new one must be cut (see `take`). */
  takePooled(length: number): Uint8Array | null {
    return this.#free.get(BouncePool.classOf(length))?.pop() ?? null;
  }

  async take(length: number): Promise<Uint8Array> {
    const cls = BouncePool.classOf(length);
    const hit = this.#free.get(cls)?.pop();
    if (hit) return hit;
    if (this.#slab === null || this.#used + cls > this.#slab.length) {
      this.#slab = await this.#newSlab();
      this.#used = 0;
    }
    const b = this.#slab.subarray(this.#used, this.#used + cls);
    this.#used += cls;
    return b;
  }

  give(b: Uint8Array): void {
    const cls = b.length;
    let list = this.#free.get(cls);
    if (!list) this.#free.set(cls, (list = []));
    list.push(b);
  }
}

