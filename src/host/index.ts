export type { HostFile, HostOpenOptions } from './host-file.js';
export { NodeHostFile } from './node-file.js';
export { nativeHost, type NativeHost } from './native.js';
export { ImageLock, imageLockRequest, closingWithLock, PERM, type LockRequest, type PermName } from './image-lock.js';
