export { NbdServer, describeAddress, type ListenAddress, type NbdServerOptions } from './server.js';
export { NbdExport, type NbdExportOptions } from './export.js';
export { DEFAULT_LIMITS, type TransmissionLimits } from './transmission.js';
