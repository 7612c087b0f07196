/**
 * The daemon's named dirty bitmaps, per node (QMP block-dirty-bitmap-*): an
 * in-memory DirtyBitmap that records the node's writes while enabled.
 * Persistent qcow2 bitmaps are loaded here too when an export names them, so
 * every export of a node shares one copy (as QEMU loads them once per node).
 */
import { DirtyBitmap } from '../block/dirty-bitmap.js';
import type { ImageNode } from '../block/index.js';
import { VdiskError } from '../errors.js';
import { followWrites, loadPersistentBitmap } from '../nbd/index.js';

interface Entry {
  readonly bitmap: DirtyBitmap;
  /** Stops recording; null while the bitmap is disabled. */
  detach: (() => void) | null;
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
    const entry: Entry = { bitmap, detach: options.disabled ? null : followWrites(node, bitmap) };
    table.set(name, entry);
    return bitmap;
  }

  remove(node: ImageNode, name: string): void {
    const entry = this.#entry(node, name);
    entry.detach?.();
    this.#byNode.get(node)?.delete(name);
  }

  clear(node: ImageNode, name: string): void {
    const b = this.#entry(node, name).bitmap;
    b.clear(0, b.length);
  }

  enable(node: ImageNode, name: string): void {
    const entry = this.#entry(node, name);
    entry.detach ??= followWrites(node, entry.bitmap);
  }

  disable(node: ImageNode, name: string): void {
    const entry = this.#entry(node, name);
    entry.detach?.();
    entry.detach = null;
  }

  has(node: ImageNode, name: string): boolean {
    return this.#byNode.get(node)?.has(name) === true;
  }

  /** Names and bitmaps of `node`, for query-named-block-nodes' dirty-bitmaps. */
  list(node: ImageNode): Array<{ name: string; bitmap: DirtyBitmap; recording: boolean }> {
    return [...(this.#byNode.get(node)?.entries() ?? [])].map(([name, e]) => ({ name, bitmap: e.bitmap, recording: e.detach !== null }));
  }

  /**
   * The bitmap `name` of `node` for an export: an in-memory one, else the
   * node's persistent bitmap of that name, loaded (and, when enabled on a
   * writable node, recording) from now on.
   */
  async forExport(node: ImageNode, name: string): Promise<{ readonly bitmap: DirtyBitmap; readonly recording: boolean }> {
    const known = this.#byNode.get(node)?.get(name);
    if (known) return { bitmap: known.bitmap, recording: known.detach !== null };
    const loaded = await loadPersistentBitmap(node, name);
    // Another export may have loaded it while we were reading.
    const again = this.#byNode.get(node)?.get(name);
    if (again) return { bitmap: again.bitmap, recording: again.detach !== null };
    const recording = loaded.enabled && !node.readOnly;
    this.#table(node).set(name, { bitmap: loaded.bitmap, detach: recording ? followWrites(node, loaded.bitmap) : null });
    return { bitmap: loaded.bitmap, recording };
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
}
