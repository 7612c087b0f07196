import { VdiskError } from '../errors.js';
import type { ListenAddress } from '../nbd/index.js';

type Args = Readonly<Record<string, unknown>>;

function field(args: Args, key: string, where: string): string {
  const v = args[key];
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && key === 'port') return String(v);
  throw new VdiskError('EINVAL', `Parameter '${where}.${key}' is missing`, { field: `${where}.${key}` });
}

/**
 * QAPI SocketAddress (`{type: unix, path}` / `{type: inet, host, port}`) or
 * the legacy form nbd-server-start takes (`{type, data: {...}}`).
 */
export function socketAddress(args: Args, where: string): ListenAddress {
  const data = typeof args['data'] === 'object' && args['data'] !== null ? (args['data'] as Args) : args;
  const type = args['type'];
  if (type === 'unix') return { socketPath: field(data, 'path', where) };
  if (type === 'inet') {
    const port = Number(field(data, 'port', where));
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new VdiskError('EINVAL', `Invalid port '${String(data['port'])}' in '${where}'`, { field: `${where}.port` });
    return { host: field(data, 'host', where), port };
  }
  throw new VdiskError('EINVAL', `Unsupported socket address type '${String(type)}' in '${where}' (unix and inet are)`, { field: `${where}.type` });
}
