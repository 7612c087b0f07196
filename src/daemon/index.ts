export { ServeDaemon, stopOnSignals, type ServeOptions } from './serve-daemon.js';
export { DEFAULT_IMAGE_SIZE, dataDirectory, ensureDefaultImage, type DefaultImage } from './default-image.js';
export { nbdUri } from './uri.js';
export { Daemon, type DaemonOptions, type ExportEntry, type NodeEntry, type NbdServerStart } from './daemon.js';
export { ManagedDaemon, QMP_VERSION, type ManagedItem } from './managed.js';
export { parseKeyval, typed } from './keyval.js';
export { TlsObjects, parsePskKeys } from './tls-objects.js';
export type { NodeGraph, ReleaseReason } from './graph.js';
