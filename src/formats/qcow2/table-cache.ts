/**
 * A bounded write-back cache of whole metadata tables (L2 tables or refcount
 * blocks), one cluster each, as QEMU's qcow2-cache.c.
 *
 * Ordering between caches is explicit: a cache may depend on another one, in
 * which case every dirty table of the other cache is written and synced before
 * any dirty table of this one reaches the disk (crash-safety rules of
 * FACTS.md 2.1/2.2). Writeback takes no table locks: table bytes are only
 * changed synchronously, so a table is snapshotted (copied) in one step and
 * the copy written.
 */
import type { HostFile } from '../../host/host-file.js';
import { hugePageBytes } from '../../host/huge-pages.js';
import { AsyncLock } from '../../util/async-lock.js';

export interface CachedTable {
  readonly offset: number;
  readonly data: Uint8Array;
  /** Serialises read-modify-write sequences on this table that span awaits. */
  readonly lock: AsyncLock;
  dirty: boolean;
  /** Users currently holding the table; pinned tables are never evicted. */
  pins: number;
}

export interface TableCacheOptions {
  readonly host: HostFile;
  readonly tableSize: number;
  /** Maximum number of tables kept (at least 2). */
  readonly capacity: number;
  /** Checked before every metadata write (overlap with other metadata). */
  readonly beforeWrite?: (offset: number, length: number) => void;
}

/** From this size on, the cache's buffers are carved out of one area on huge pages. */
const ARENA_MIN_BYTES = 2 * 1024 * 1024;
/**
 * The area's largest size; a larger cache (an l2-cache-size of gigabytes) takes
 * plain buffers past it. The area is a WebAssembly memory (page-aligned), which
 * cannot exceed 4 GiB.
 */
const ARENA_MAX_BYTES = 256 * 1024 * 1024;

export class TableCache {
  readonly #host: HostFile;
  readonly #tableSize: number;
  readonly #capacity: number;
  readonly #beforeWrite: ((offset: number, length: number) => void) | undefined;
  /** Insertion order is recency order: re-inserted on each hit. */
  readonly #tables = new Map<number, CachedTable>();
  readonly #loading = new Map<number, Promise<CachedTable>>();
  /** The table inserted last (it may have left the cache since: then nothing is newest). */
  #newest: CachedTable | null = null;
  #dependsOn: TableCache | null = null;
  #dependsOnSync = false;
  #resolving: Promise<void> | null = null;
  /**
   * Buffers of evicted clean tables, handed to the next loads: a scan through
   * thousands of tables (map of a 1 TiB image) otherwise zero-fills and faults
   * in a fresh buffer per table. Loads run concurrently (status reads ahead)
   * and evict only once loaded, so every evicted buffer is kept: there are
   * never more than `capacity` of them.
   */
  readonly #spare: Uint8Array[] = [];
  /**
   * Where new buffers come from, up to `capacity` tables: one area on huge
   * pages, touched only as tables are loaded into it. A page fault costs
   * about 10 us on our test machines; 4 KiB pages made the first pass of a
   * map through 8 MiB of tables fault 2,048 times, 2 MiB pages four times.
   */
  #arena: Uint8Array | null = null;
  #arenaUsed = 0;
  #buffersMade = 0;

  constructor(options: TableCacheOptions) {
    this.#host = options.host;
    this.#tableSize = options.tableSize;
    this.#capacity = Math.max(2, options.capacity);
    this.#beforeWrite = options.beforeWrite;
  }

  /**
   * The table at `offset`, pinned: call `release` when done. `fresh` tables are
   * new (all zero) and not read from the disk.
   */
  async acquire(offset: number, fresh = false): Promise<CachedTable> {
    const hit = this.#tables.get(offset);
    if (hit) {
      this.#touch(hit);
      hit.pins++;
      if (fresh) hit.data.fill(0);
      return hit;
    }
    const pending = this.#loading.get(offset);
    if (pending) {
      const t = await pending;
      t.pins++;
      return t;
    }
    const load = (async (): Promise<CachedTable> => {
      const data = this.#spare.pop() ?? this.#newBuffer();
      if (fresh) data.fill(0);
      else await this.#host.read(data, offset);
      const t: CachedTable = { offset, data, lock: new AsyncLock(), dirty: false, pins: 0 };
      return t;
    })();
    this.#loading.set(offset, load);
    try {
      const t = await load;
      t.pins++;
      this.#tables.set(offset, t);
      this.#newest = t;
      return t;
    } finally {
      this.#loading.delete(offset);
      await this.#evict();
    }
  }

  /** The table at `offset`, pinned, if it is in the cache now; null otherwise (no await). */
  acquireCached(offset: number): CachedTable | null {
    const hit = this.#tables.get(offset);
    if (!hit) return null;
    this.#touch(hit);
    hit.pins++;
    return hit;
  }

  /** Makes `t` the most recently used table. */
  #touch(t: CachedTable): void {
    // Runs of requests hit the same table: re-inserting it each time left a deleted entry
    // in the Map per hit, and the Map grew and was rebuilt (a 4 GiB convert: every cluster).
    if (t === this.#newest) return;
    this.#tables.delete(t.offset);
    this.#tables.set(t.offset, t);
    this.#newest = t;
  }

  release(t: CachedTable): void {
    t.pins = Math.max(0, t.pins - 1);
  }

  markDirty(t: CachedTable): void {
    t.dirty = true;
  }

  /** Drops a table without writing it (its cluster was freed). */
  forget(offset: number): void {
    const t = this.#tables.get(offset);
    if (t && t.pins === 0) this.#tables.delete(offset);
    else if (t) t.dirty = false;
  }

  /** Makes dirty tables of this cache wait for `other` to be written and synced. */
  async setDependency(other: TableCache): Promise<void> {
    // Re-checked after every await (other requests change dependencies too) so
    // that no cycle forms: `other` depends on nothing and is not resolving, and
    // this cache depends on nothing else, at the moment the dependency is set.
    for (;;) {
      if (other.#dependsOn !== null || other.#resolving !== null) {
        await (other.#resolving ?? other.flushWithDependencies());
        continue;
      }
      if (this.#dependsOn !== null && this.#dependsOn !== other) {
        await this.flushWithDependencies();
        continue;
      }
      break;
    }
    this.#dependsOn = other;
  }

  /** Whether `setDependency(other)` would change nothing now (callers skip its await). */
  dependsOnSettled(other: TableCache): boolean {
    return this.#dependsOn === other && other.#dependsOn === null && other.#resolving === null;
  }

  /** The next write of a dirty table must be preceded by a host sync (COW data first). */
  requireSyncBeforeWrite(): void {
    this.#dependsOnSync = true;
  }

  hasDirty(): boolean {
    for (const t of this.#tables.values()) if (t.dirty) return true;
    return false;
  }

  /** Writes every dirty table (after its dependencies), without a final sync. */
  async writeDirty(): Promise<void> {
    for (const t of [...this.#tables.values()]) {
      if (t.dirty) await this.#writeBack(t);
    }
  }

  /** Writes every dirty table and syncs the host. */
  async flushWithDependencies(): Promise<void> {
    await this.writeDirty();
    await this.#resolveDependencies();
    await this.#host.sync();
  }

  /** Drops every clean unpinned table (after a refcount rebuild, for example). */
  clear(): void {
    for (const [off, t] of this.#tables) if (!t.dirty && t.pins === 0) this.#tables.delete(off);
  }

  /**
   * Writes what this cache depends on. Concurrent callers share one resolution:
   * nobody may write a table of this cache while a dependency is being written.
   */
  async #resolveDependencies(): Promise<void> {
    if (this.#resolving) {
      await this.#resolving;
      return;
    }
    const work = async (): Promise<void> => {
      if (this.#dependsOn) {
        const dep = this.#dependsOn;
        this.#dependsOn = null;
        try {
          await dep.flushWithDependencies();
        } catch (e) {
          this.#dependsOn ??= dep;
          throw e;
        }
      }
      if (this.#dependsOnSync) {
        this.#dependsOnSync = false;
        try {
          await this.#host.sync();
        } catch (e) {
          this.#dependsOnSync = true;
          throw e;
        }
      }
    };
    this.#resolving = work().finally(() => {
      this.#resolving = null;
    });
    await this.#resolving;
  }

  async #writeBack(t: CachedTable): Promise<void> {
    // A dependency may be added while resolving one (a concurrent link): resolve
    // until none is left, then snapshot the table in the same synchronous step.
    while (this.#dependsOn !== null || this.#dependsOnSync || this.#resolving) await this.#resolveDependencies();
    if (!t.dirty) return;
    const copy = t.data.slice();
    t.dirty = false;
    try {
      this.#beforeWrite?.(t.offset, this.#tableSize);
      await this.#host.write(copy, t.offset);
    } catch (e) {
      t.dirty = true;
      throw e;
    }
  }

  async #evict(): Promise<void> {
    if (this.#tables.size <= this.#capacity) return;
    for (const [off, t] of this.#tables) {
      if (this.#tables.size <= this.#capacity) break;
      if (t.pins > 0) continue;
      if (t.dirty) await this.#writeBack(t);
      // The table may have been re-pinned or dirtied while writing.
      if (t.pins === 0 && !t.dirty && this.#tables.get(off) === t) {
        this.#tables.delete(off);
        if (this.#spare.length < this.#capacity) this.#spare.push(t.data);
      }
    }
  }

  /** How many table buffers this cache has made so far (reuse is observable in tests). */
  get buffersMade(): number {
    return this.#buffersMade;
  }

  #newBuffer(): Uint8Array {
    this.#buffersMade++;
    const arenaBytes = Math.min(ARENA_MAX_BYTES, this.#capacity * this.#tableSize);
    if (this.#arena === null && arenaBytes >= ARENA_MIN_BYTES) this.#arena = hugePageBytes(arenaBytes);
    if (this.#arena !== null && this.#arenaUsed + this.#tableSize <= this.#arena.length) {
      const data = this.#arena.subarray(this.#arenaUsed, this.#arenaUsed + this.#tableSize);
      this.#arenaUsed += this.#tableSize;
      return data;
    }
    // Pinned tables and loads in flight may briefly take the cache past its capacity.
    return new Uint8Array(this.#tableSize);
  }
}
