/**
 * The daemon's named dirty bitmaps, per node (QMP block-dirty-bitmap-*): an
 * in-memory DirtyBitmap that records the node's writes while enabled.
 * Persistent qcow2 bitmaps are loaded here too when an export names them, once
 * per node (as QEMU loads them once per node).
 *
 * A bitmap an export offers is busy until the export goes, as in QEMU: no
 * other export may offer it, and clear, remove, enable, disable and merge
 * refuse it, so a client reading it never sees it change under it.
 */
import { DirtyBitmap } from '../block/dirty-bitmap.js';
import type { ImageNode } from '../block/index.js';
import { VdiskError } from '../errors.js';
import { followWrites, loadPersistentBitmap } from '../nbd/index.js';

interface Entry {
  readonly bitmap: DirtyBitmap;
  /** Stops recording; null while the bitmap is disabled. */
  detach: (() => void) | null;
  /** Loaded from the image's persistent bitmaps (reported as such; never created over QMP). */
  readonly persistent: boolean;
  /** Offered by an export (see claim). */
  busy: boolean;
}

/** A bitmap named in block-dirty-bitmap-merge's `bitmaps`: on the target's node, or on another. */
export interface BitmapRef {
  readonly node: ImageNode;
  readonly name: string;
}

/** What query-named-block-nodes reports of one bitmap (QAPI BlockDirtyInfo). */
export interface BitmapInfo {
  readonly name: string;
  readonly recording: boolean;
  readonly persistent: boolean;
  readonly busy: boolean;
  readonly granularity: number;
  /** Dirty bytes, whole granules, as QEMU counts them. */
  readonly count: number;
}

/** Default granularity of block-dirty-bitmap-add, as QEMU: the cluster size clamped to [4 KiB, 64 KiB]; 64 KiB without clusters. */
function defaultGranularity(node: ImageNode): number {
  const cluster = node.clusterSize ?? 65536;
  return Math.min(Math.max(cluster, 4096), 65536);
}

export class NamedBitmaps {
  readonly #byNode = new Map<ImageNode, Map<string, Entry>>();

  /** block-dirty-bitmap-add: a new enabled bitmap recording `node`'s writes from now on. */
  add(node: ImageNode, name: string, options: { readonly granularity?: number; readonly disabled?: boolean } = {}): DirtyBitmap {
    if (name === '' || name.length > 1023) throw new VdiskError('EINVAL', `Bitmap name '${name}' must be 1 to 1023 characters`, { field: 'name' });
    const table = this.#table(node);
    if (table.has(name)) throw new VdiskError('EINVAL', `Bitmap already exists: ${name}`, { field: 'name' });
    const bitmap = new DirtyBitmap(node.length, options.granularity ?? defaultGranularity(node));
    const entry: Entry = { bitmap, detach: options.disabled ? null : followWrites(node, bitmap), persistent: false, busy: false };
    table.set(name, entry);
    return bitmap;
  }

  remove(node: ImageNode, name: string): void {
    const entry = this.#idle(node, name);
    entry.detach?.();
    this.#byNode.get(node)?.delete(name);
  }

  clear(node: ImageNode, name: string): void {
    const b = this.#idle(node, name).bitmap;
    b.clear(0, b.length);
  }

  enable(node: ImageNode, name: string): void {
    const entry = this.#idle(node, name);
    entry.detach ??= followWrites(node, entry.bitmap);
  }

  disable(node: ImageNode, name: string): void {
    const entry = this.#idle(node, name);
    entry.detach?.();
    entry.detach = null;
  }

  /**
   * block-dirty-bitmap-merge: sets in `target` of `node` every granule dirty in
   * any of `sources`, with QEMU's checks in QEMU's order (each source found,
   * idle and of the target's size, then the target idle). Nothing changes
   * unless all pass. Granularities may differ: a dirty source granule dirties
   * every target granule it touches.
   */
  merge(node: ImageNode, target: string, sources: ReadonlyArray<() => BitmapRef>): void {
    const into = this.#entry(node, target);
    const from: DirtyBitmap[] = [];
    for (const source of sources) {
      // Resolved in turn, so an unknown node is reported where QEMU reports it.
      const ref = source();
      const src = this.#idle(ref.node, ref.name).bitmap;
      if (src.length !== into.bitmap.length) {
        throw new VdiskError('EINVAL', `Bitmaps are of different sizes (destination size is ${into.bitmap.length}, source size is ${src.length}) and can't be merged`, { field: 'bitmaps' });
      }
      from.push(src);
    }
    this.#idle(node, target);
    for (const src of from) into.bitmap.merge(src);
  }

  /**
   * Marks the bitmaps `names` of `node` busy for an export; the returned
   * function frees them when the export goes. Refuses a bitmap already busy.
   */
  claim(node: ImageNode, names: readonly string[]): () => void {
    const entries = names.map((name) => this.#idle(node, name));
    for (const e of entries) e.busy = true;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const e of entries) e.busy = false;
    };
  }

  has(node: ImageNode, name: string): boolean {
    return this.#byNode.get(node)?.has(name) === true;
  }

  /** x-debug-block-dirty-bitmap-sha256: the hash of the bitmap's bits, as QEMU computes it. */
  sha256(node: ImageNode, name: string): string {
    return this.#entry(node, name).bitmap.sha256();
  }

  /** The bitmaps of `node` for query-named-block-nodes' dirty-bitmaps, the newest first (as QEMU lists them). */
  list(node: ImageNode): BitmapInfo[] {
    return [...(this.#byNode.get(node)?.entries() ?? [])].reverse().map(([name, e]) => ({
      name,
      recording: e.detach !== null,
      persistent: e.persistent,
      busy: e.busy,
      granularity: e.bitmap.granularity,
      count: e.bitmap.count * e.bitmap.granularity,
    }));
  }

  /**
   * The bitmap `name` of `node` for an export: an in-memory one, else the
   * node's persistent bitmap of that name, loaded (and, when enabled on a
   * writable node, recording) from now on.
   */
  async forExport(node: ImageNode, name: string): Promise<{ readonly bitmap: DirtyBitmap; readonly recording: boolean }> {
    // Whether it is busy is for the export's claim to say, after the checks QEMU makes first.
    const known = this.#byNode.get(node)?.get(name);
    if (known) return { bitmap: known.bitmap, recording: known.detach !== null };
    const loaded = await loadPersistentBitmap(node, name);
    // Another export may have loaded it while we were reading.
    const again = this.#byNode.get(node)?.get(name);
    if (again) return { bitmap: again.bitmap, recording: again.detach !== null };
    const recording = loaded.enabled && !node.readOnly;
    this.#table(node).set(name, { bitmap: loaded.bitmap, detach: recording ? followWrites(node, loaded.bitmap) : null, persistent: true, busy: false });
    return { bitmap: loaded.bitmap, recording };
  }

  /**
   * Runs `fn`, which may add, remove, clear, enable, disable and merge
   * bitmaps; if it throws, every bitmap is put back as it was (bits, whether
   * it records, the order they were added in), and the error goes on. For
   * QMP's transaction: `fn` must not wait, so no write can land between the
   * copy and the restore.
   */
  atomically<T>(fn: () => T): T {
    const saved = [...this.#byNode].map(([node, table]) => ({
      node,
      entries: [...table].map(([name, entry]) => ({ name, entry, bits: entry.bitmap.saveBits(), recording: entry.detach !== null })),
    }));
    try {
      return fn();
    } catch (e) {
      for (const table of this.#byNode.values()) {
        for (const entry of table.values()) {
          entry.detach?.();
          entry.detach = null;
        }
      }
      this.#byNode.clear();
      for (const { node, entries } of saved) {
        const table = this.#table(node);
        for (const { name, entry, bits, recording } of entries) {
          entry.bitmap.restoreBits(bits);
          entry.detach = recording ? followWrites(node, entry.bitmap) : null;
          table.set(name, entry);
        }
      }
      throw e;
    }
  }

  /** Forgets every bitmap of a node that is going away. */
  dropNode(node: ImageNode): void {
    for (const e of this.#byNode.get(node)?.values() ?? []) e.detach?.();
    this.#byNode.delete(node);
  }

  #table(node: ImageNode): Map<string, Entry> {
    let t = this.#byNode.get(node);
    if (!t) {
      t = new Map();
      this.#byNode.set(node, t);
    }
    return t;
  }

  #entry(node: ImageNode, name: string): Entry {
    const e = this.#byNode.get(node)?.get(name);
    if (!e) throw new VdiskError('ENOENT', `Dirty bitmap '${name}' not found`, { field: 'name' });
    return e;
  }

  /** The entry, which no export may be offering (QEMU's words). */
  #idle(node: ImageNode, name: string): Entry {
    const e = this.#entry(node, name);
    if (e.busy) throw new VdiskError('EBUSY', `Bitmap '${name}' is currently in use by another operation and cannot be used`, { field: 'name' });
    return e;
  }
}
