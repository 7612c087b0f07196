export { QmpServer, QmpSession, type QmpCommandDef, type QmpServerOptions } from './server.js';
export { QmpError, type QmpErrorClass, type QmpVersion, timestampNow } from './protocol.js';
export { checkArgs, isJsonObject, str, optStr, optInt, optBool, type ParamSpec, type ParamType } from './args.js';
export { JsonStreamSplitter } from './json-stream.js';
