import type { ListenAddress } from '../nbd/index.js';

/** The NBD URI (as libnbd and qemu spell it) that reaches `exportName` at `address`. */
export function nbdUri(address: ListenAddress, exportName: string): string {
  const name = encodeURIComponent(exportName).replace(/%2F/gi, '/');
  if ('socketPath' in address) return `nbd+unix:///${name}?socket=${encodeURIComponent(address.socketPath).replace(/%2F/gi, '/')}`;
  const host = address.host === '0.0.0.0' || address.host === '::' || address.host === '' ? 'localhost' : address.host;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return `nbd://${shownHost}:${address.port}/${name}`;
}
