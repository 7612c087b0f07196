import type { CacheMode, FormatInfo, FormatName, LayerExtent, WriteFlags, ZeroFlags, CheckReport, RepairMode } from '../formats/driver.js';

/** One extent of a whole chain's allocation map, as `qemu-img map` reports it. */
export interface ChainExtent {
  readonly offset: number;
  readonly length: number;
  /** Some layer of the chain defines this range (qemu-img map's `present`). */
  readonly present: boolean;
  readonly zero: boolean;
  readonly data: boolean;
  /** 0 = top layer; the depth of the layer that defines the range (or the chain length if none does). */
  readonly depth: number;
  readonly hostOffset?: number;
  /** The file holding the data at hostOffset. */
  readonly hostFile?: string;
  readonly compressed?: boolean;
}

export interface OpenOptions {
  /** Format of the top image; probed when absent (raw never becomes another format by probing a guest's data). */
  readonly format?: FormatName;
  readonly readOnly?: boolean;
  readonly cache?: CacheMode;
  readonly forceShare?: boolean;
  /** Do not open the backing chain (qemu-img's -u / unsafe cases). */
  readonly noBacking?: boolean;
}

export type { LayerExtent, WriteFlags, ZeroFlags, FormatInfo, CheckReport, RepairMode };
