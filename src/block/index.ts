/** The block layer's public surface. */
export { BlockNode, type BlockNodeOptions, type WriteEvent, type WriteObserver } from './node.js';
export { DirtyBitmap, MIN_GRANULARITY, MAX_GRANULARITY, type DirtyRange } from './dirty-bitmap.js';
export { openImage, openImageWith, resolveBackingPath, type FormatTable } from './open.js';
export { createImage } from './create.js';
export { mergeChainStatus, type StatusLayer } from './chain-status.js';
export type { ChainExtent, ImageNode, OpenOptions } from './types.js';
