import { VdiskError } from '../../errors.js';
import { DEFAULT_PORT } from '../protocol/constants.js';

/** Where an NBD server listens: a Unix socket or a TCP host and port. */
export type NbdAddress = { readonly socketPath: string } | { readonly host: string; readonly port: number };

export interface NbdTarget {
  readonly address: NbdAddress;
  readonly exportName: string;
  /** The URI asked for TLS (nbds:// or nbds+unix://). */
  readonly tls: boolean;
}

/**
 * Parses the NBD URIs libnbd and QEMU accept: nbd://host[:port]/export,
 * nbd+unix:///export?socket=PATH, and the TLS variants nbds:// / nbds+unix://.
 */
export function parseNbdUri(uri: string): NbdTarget {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new VdiskError('EINVAL', `'${uri}' is not an NBD URI`, { field: 'uri' });
  }
  const scheme = url.protocol.replace(/:$/, '');
  const tls = scheme.startsWith('nbds');
  const exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (scheme === 'nbd+unix' || scheme === 'nbds+unix') {
    const socketPath = url.searchParams.get('socket');
    if (!socketPath) throw new VdiskError('EINVAL', `NBD URI '${uri}' lacks ?socket=PATH`, { field: 'uri' });
    return { address: { socketPath }, exportName, tls };
  }
  if (scheme === 'nbd' || scheme === 'nbds' || scheme === 'nbd+tcp' || scheme === 'nbds+tcp') {
    const port = url.port === '' ? DEFAULT_PORT : Number(url.port);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || 'localhost';
    return { address: { host, port }, exportName, tls };
  }
  throw new VdiskError('EINVAL', `Unsupported NBD URI scheme '${scheme}' in '${uri}'`, { field: 'uri' });
}
