/**
 * vdisk as a library: open disk images (raw, qcow2, ploop) with their backing
 * chains, read and write them, ask what is allocated, create new ones.
 *
 * @example
 * ```ts
 * import { createImage, openImage } from 'vdisk';
 *
 * await createImage('disk.raw', 'raw', { size: 1024 * 1024, options: {} });
 * const disk = await openImage('disk.raw', { format: 'raw' });
 * await disk.write(0, new TextEncoder().encode('hello'));
 * const map = await disk.blockStatus(0, disk.length); // [{ offset: 0, length: 4096, data: true, ... }, ...]
 * await disk.close();
 * ```
 * A runnable version is examples/basic.mjs (exercised by test/unit/block/example.test.ts).
 */
export { openImage, createImage, BlockNode, type BlockNodeOptions } from './block/index.js';
export type { ChainExtent, ImageNode, OpenOptions } from './block/types.js';
export { VdiskError, isVdiskError, type ErrorCode, type ErrorContext } from './errors.js';
export { formatByName, probeFormat } from './formats/registry.js';
export type {
  BackingReference,
  CacheMode,
  CheckReport,
  FormatInfo,
  FormatName,
  LayerExtent,
  RepairMode,
  WriteFlags,
  ZeroFlags,
} from './formats/driver.js';
export type { CreateOptions } from './formats/registry-types.js';
