export type { HostFile, HostOpenOptions } from './host-file.js';
export { NodeHostFile } from './node-file.js';
export { nativeHost, type NativeHost } from './native.js';
