/**
 * The plain in-place writers of one guest cluster (overwrites of data in place,
 * which take no allocation record): what a discard, zeroing or status change
 * of the cluster must wait for. InflightTable keeps one per cluster, beyond its
 * writers (see IDLE_WRITERS_KEPT); the promise of their end is made only when
 * someone waits.
 */
export class DirectWriters {
  count = 0;
  #promise: Promise<void> | null = null;
  #resolve: (() => void) | null = null;

  whenIdle(): Promise<void> {
    this.#promise ??= new Promise<void>((r) => (this.#resolve = r));
    return this.#promise;
  }

  /** One of the writers ended. (A method, not a closure: one per request.) */
  leave(): void {
    this.count--;
    if (this.count === 0) this.#idle();
  }

  #idle(): void {
    const resolve = this.#resolve;
    this.#promise = null;
    this.#resolve = null;
    resolve?.();
  }
}

/**
 * Clusters whose writers' entry is kept while none writes, until this many:
 * then the idle ones go at once. Deleting each cluster's entry as its last
 * writer left made the map rebuild its hash table every few requests of a
 * depth-1 overwrite stream (a new backing store each time: in a cpu profile of
 * `bench/write-path-cpu.mjs --depth 1 --overwrite --requests 200000`, 184 ms
 * of scavenges in the JS thread's 606 ms of work).
 */
export const IDLE_WRITERS_KEPT = 1024;
