export * from './constants.js';
export * from './handshake.js';
export * from './options.js';
export * from './requests.js';
export * from './replies.js';
export * from './errno.js';
export { decodeString, encodeString, protocolError } from './wire.js';
