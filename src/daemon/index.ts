export { ServeDaemon, stopOnSignals, type ServeOptions } from './serve-daemon.js';
export { DEFAULT_IMAGE_SIZE, dataDirectory, ensureDefaultImage, type DefaultImage } from './default-image.js';
export { nbdUri } from './uri.js';
