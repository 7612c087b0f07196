export * from './server/index.js';
export * as protocol from './protocol/index.js';
export { NbdClient, NbdDriver, parseNbdUri, type ClientTls, type ContextExtent, type NbdAddress, type NbdConnectOptions, type NbdTarget, type StatusExtent } from './client/index.js';
