import type { ImageNode } from '../../block/types.js';
import { MAX_PAYLOAD, META_ALLOCATION_DEPTH, META_BASE_ALLOCATION, META_DIRTY_BITMAP_PREFIX, TransmissionFlag } from '../protocol/constants.js';
import type { BlockSizes } from '../protocol/options.js';
import type { ExportBitmap } from './bitmap-context.js';
import type { MetaContext } from './meta-context.js';
import { RequestGate } from './request-gate.js';

/** One image offered under a name. */
export interface NbdExportOptions {
  /** The export name clients ask for ("" is the default export). */
  readonly name: string;
  readonly description?: string;
  readonly node: ImageNode;
  /** Export read-only even if the node is writable. */
  readonly readOnly?: boolean;
  /**
   * Advertise CAN_MULTI_CONN. True is honest when every connection to this
   * export goes through this one node, whose flush flushes the host file:
   * a FLUSH on any connection then covers writes made on all of them.
   */
  readonly multiConn?: boolean;
  /** Offer `qemu:allocation-depth` (qemu-nbd -A; block-export-add allocation-depth). Default true. */
  readonly allocationDepth?: boolean;
  /** Dirty bitmaps offered as `qemu:dirty-bitmap:NAME` (qemu-nbd -B; block-export-add `bitmaps`). */
  readonly bitmaps?: readonly ExportBitmap[];
}

/** What the server tells clients about an export, computed once (nbdkit asks a layer once per connection). */
export class NbdExport {
  readonly name: string;
  readonly description: string;
  readonly readOnly: boolean;
  readonly multiConn: boolean;
  readonly allocationDepth: boolean;
  readonly bitmaps: readonly ExportBitmap[];
  /** Every request of every connection to this export passes through here. */
  readonly gate = new RequestGate();
  #node: ImageNode;

  constructor(options: NbdExportOptions) {
    this.name = options.name;
    this.description = options.description ?? '';
    this.#node = options.node;
    this.readOnly = options.readOnly === true || options.node.readOnly;
    this.multiConn = options.multiConn === true;
    this.allocationDepth = options.allocationDepth !== false;
    this.bitmaps = [...(options.bitmaps ?? [])];
  }

  /** The node requests go to now; read it only inside `gate` so a switch cannot happen mid-request. */
  get node(): ImageNode {
    return this.#node;
  }

  /**
   * Switches the export to `to`: new requests wait, requests in flight on the
   * old node finish, then the waiting ones go to `to` in arrival order.
   */
  async switchNode(to: ImageNode): Promise<void> {
    try {
      await this.gate.hold();
      this.#node = to;
    } finally {
      this.gate.release();
    }
  }

  get size(): number {
    return this.node.length;
  }

  /** Transmission flags; DF only once structured replies are agreed (proto.md requires it clear otherwise). */
  transmissionFlags(structuredReplies: boolean): number {
    let f = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA | TransmissionFlag.SEND_CACHE;
    if (this.readOnly) f |= TransmissionFlag.READ_ONLY;
    else f |= TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO;
    if (structuredReplies) f |= TransmissionFlag.SEND_DF;
    if (this.multiConn) f |= TransmissionFlag.CAN_MULTI_CONN;
    return f;
  }

  /** Block sizes for NBD_INFO_BLOCK_SIZE: every byte alignment works (the node does read-modify-write), the node's alignment is preferred. */
  blockSizes(): BlockSizes {
    const preferred = Math.min(Math.max(4096, this.node.requestAlignment), MAX_PAYLOAD);
    return { minimum: 1, preferred, maximum: MAX_PAYLOAD };
  }

  /** Metadata contexts this export offers, with the ids used in BLOCK_STATUS replies. */
  metaContexts(): readonly MetaContext[] {
    const contexts: MetaContext[] = [{ id: 0, name: META_BASE_ALLOCATION }];
    if (this.allocationDepth) contexts.push({ id: 1, name: META_ALLOCATION_DEPTH });
    // Ids are fixed per export: 2 + the bitmap's position.
    this.bitmaps.forEach((b, i) => contexts.push({ id: 2 + i, name: META_DIRTY_BITMAP_PREFIX + b.name, bitmap: b.bitmap }));
    return contexts;
  }
}
