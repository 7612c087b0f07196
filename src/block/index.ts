/** The block layer's public surface. */
export { BlockNode, type BlockNodeOptions } from './node.js';
export { openImage, openImageWith, resolveBackingPath, type FormatTable } from './open.js';
export { createImage } from './create.js';
export { mergeChainStatus, type StatusLayer } from './chain-status.js';
export type { ChainExtent, ImageNode, OpenOptions } from './types.js';
