export { NbdClient, type ClientTls, type ContextExtent, type NbdConnectOptions, type StatusExtent } from './client.js';
export { NbdDriver } from './driver.js';
export { parseNbdUri, type NbdAddress, type NbdTarget } from './uri.js';
