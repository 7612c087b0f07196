export type { HostFile, HostOpenOptions, HostRange } from './host-file.js';
export { isHostRange, readHostRange, sliceBytes, writeParts, type Bytes } from './host-range.js';
export { NodeHostFile } from './node-file.js';
export { nativeHost, type NativeHost } from './native.js';
export { ImageLock, imageLockRequest, closingWithLock, PERM, type LockRequest, type PermName } from './image-lock.js';
