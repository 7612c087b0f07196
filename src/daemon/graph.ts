import type { ImageNode } from '../block/index.js';

/** Why a node stopped being served; jobs on it cancel cleanly. */
export type ReleaseReason = 'export-removed' | 'export-suspended' | 'node-deleted' | 'shutdown';

export interface ReplaceOptions {
  /**
   * `from` leaves the graph (active commit: the old top, and the images
   * between it and `to`, are closed by the job): their entries are removed
   * and the name of `to` takes over. Default false (mirror: the source stays).
   */
  readonly dropFrom?: boolean;
}

/**
 * The daemon's named nodes, as the job commands and QMP handlers see them.
 * Implemented by the daemon (named nodes + exports); jobs use it to find their
 * nodes and to switch an export over on completion.
 */
export interface NodeGraph {
  /** The node with this node-name (or the export/device name QMP users give); VdiskError ENOENT if none. */
  node(name: string): ImageNode;
  /** The node-name under which `node` is registered, if any. */
  nameOf(node: ImageNode): string | undefined;
  /** Registers a node opened by a job (e.g. a mirror target) under a name. */
  add(name: string, node: ImageNode): void;
  /**
   * Switches every user of `from` (exports, parents) to `to`. Requests in flight
   * on `from` finish first; new ones wait and then go to `to`; none are lost or
   * reordered.
   */
  replace(from: ImageNode, to: ImageNode, options?: ReplaceOptions): Promise<void>;
  /** The file a node was added from (for a ploop stack: its DiskDescriptor.xml), if the graph names it. */
  sourceFile(node: ImageNode): string | undefined;
  /** blockdev-del of a node a job added (a drive-mirror target left behind by cancel); closes it. */
  deleteNode(name: string): Promise<void>;
  /** Called when a node stops being served (export removed or suspended, node deleted, daemon stopping). */
  onRelease(listener: (node: ImageNode, reason: ReleaseReason) => void): () => void;
}
