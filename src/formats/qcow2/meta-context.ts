/**
 * What the qcow2 driver lends to its metadata operations (snapshots, bitmaps,
 * amend): the opened image state and controlled access to the parsed header.
 * The operations live in their own modules; the driver keeps the state.
 */
import type { ParsedHeaderCluster } from './header.js';
import type { Qcow2Image } from './image.js';

export interface Qcow2MetaContext {
  readonly img: Qcow2Image;
  /** The header as the driver knows it (kept in sync with the disk). */
  parsed(): ParsedHeaderCluster;
  /** Records a header change that the operation has already written to disk. */
  setParsed(parsed: ParsedHeaderCluster): void;
  /**
   * Refuses read-only, closed or corrupt images; clears the autoclear bits
   * vdisk does not know first. The bitmaps bit stays: a metadata change
   * (snapshot, amend, backing file, bitmaps) leaves persistent bitmaps
   * consistent, and guest writes are tracked in them (bitmap-ops.ts).
   */
  beginChange(): Promise<void>;
  /** Writes every dirty table in dependency order and syncs. */
  flush(): Promise<void>;
  /** Changes the virtual size, shrinking if need be (the driver's resize with shrink). */
  resize(newLength: number): Promise<void>;
}
