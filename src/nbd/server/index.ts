export { NbdServer, describeAddress, type ListenAddress, type NbdServerOptions } from './server.js';
export { NbdExport, type NbdExportOptions } from './export.js';
export { DEFAULT_LIMITS, type TransmissionLimits } from './transmission.js';
export { RequestGate } from './request-gate.js';
export { tlsUpgrader, type TlsCredentials, type TlsUpgrader } from './tls.js';
export { bitmapExtents, followWrites, loadPersistentBitmap, type ExportBitmap } from './bitmap-context.js';
