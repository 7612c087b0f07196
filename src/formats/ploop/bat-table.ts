/**
 * The in-memory header + BAT of one open image, split into 4 KiB pages, each with
 * its own lock and dirty generation. Page 0 holds the 64-byte header too.
 *
 * Lock discipline (see driver.ts for the full order): a caller holds at most one
 * page lock at a time, except `lockAll`, which takes every page lock in
 * ascending order. Entries are read without a lock (a JS read of one u32 is
 * atomic); they are changed only under their page's lock.
 */
import type { HostFile } from '../../host/host-file.js';
import { AsyncLock } from '../../util/async-lock.js';
import { BAT_PAGE_SIZE, batEntryOffset, batPageCount, batPageOf } from './layout.js';

export class BatTable {
  /** Header followed by the BAT: exactly the file's bytes [0, batEnd). */
  #bytes: Uint8Array;
  #view: DataView;
  readonly #locks: AsyncLock[];
  /** Per page: bumped on every change; `#written` holds the generation last on disk. */
  readonly #generation: number[];
  readonly #written: number[];

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const pages = batPageCount(bytes.length);
    this.#locks = Array.from({ length: pages }, () => new AsyncLock());
    this.#generation = new Array<number>(pages).fill(0);
    this.#written = new Array<number>(pages).fill(0);
  }

  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /**
   * Replaces the bytes with a longer copy (resize); the caller holds every page lock.
   * New pages get their own locks, which the caller does not hold.
   */
  grow(bytes: Uint8Array): void {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let p = this.#locks.length; p < batPageCount(bytes.length); p++) {
      this.#locks.push(new AsyncLock());
      this.#generation.push(1);
      this.#written.push(0);
    }
    for (let p = 0; p < this.#locks.length; p++) this.#touch(p);
  }

  get pageCount(): number {
    return this.#locks.length;
  }

  entry(index: number): number {
    return this.#view.getUint32(batEntryOffset(index), true);
  }

  /** Changes an entry; the caller holds the entry's page lock. */
  setEntry(index: number, value: number): void {
    this.#view.setUint32(batEntryOffset(index), value, true);
    this.#touch(batPageOf(index));
  }

  /** Marks the header (page 0) changed after the caller edited `bytes[0..64)` under page 0's lock. */
  headerChanged(): void {
    this.#touch(0);
  }

  lock(page: number): AsyncLock {
    const l = this.#locks[page];
    if (!l) throw new RangeError(`BAT page ${page} out of range`);
    return l;
  }

  /** Takes every page lock in ascending order; returns the function releasing them all. */
  async lockAll(): Promise<() => void> {
    const releases: Array<() => void> = [];
    for (const l of this.#locks) releases.push(await l.acquire());
    return () => {
      for (const r of releases.reverse()) r();
    };
  }

  isDirty(page: number): boolean {
    return this.#generation[page] !== this.#written[page];
  }

  /**
   * Copies the dirty pages as they are now. The copies, written after the data
   * they reference is synced, keep the index-after-data order.
   */
  snapshotDirty(): Array<{ page: number; generation: number; bytes: Uint8Array }> {
    const out: Array<{ page: number; generation: number; bytes: Uint8Array }> = [];
    for (let p = 0; p < this.pageCount; p++) {
      if (!this.isDirty(p)) continue;
      const start = p * BAT_PAGE_SIZE;
      const end = Math.min(start + BAT_PAGE_SIZE, this.#bytes.length);
      out.push({ page: p, generation: this.#generation[p] ?? 0, bytes: this.#bytes.slice(start, end) });
    }
    return out;
  }

  /** Writes snapshot pages and records them as written (unless changed again meanwhile). */
  async writeSnapshot(host: HostFile, pages: ReadonlyArray<{ page: number; generation: number; bytes: Uint8Array }>): Promise<void> {
    for (const s of pages) {
      await host.write(s.bytes, s.page * BAT_PAGE_SIZE);
      if ((this.#written[s.page] ?? 0) < s.generation) this.#written[s.page] = s.generation;
    }
  }

  #touch(page: number): void {
    this.#generation[page] = (this.#generation[page] ?? 0) + 1;
  }
}
