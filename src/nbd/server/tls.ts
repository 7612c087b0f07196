/**
 * TLS for NBD's STARTTLS: the plaintext socket, after the server acknowledged
 * NBD_OPT_STARTTLS, is handed to a (never listening) tls.Server which runs the
 * handshake on it. That path works for both x509 and PSK; a bare
 * `new tls.TLSSocket(socket, { pskCallback })` does not (see DEPENDENCIES.md).
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { VdiskError } from '../../errors.js';

/** Server credentials, as qemu's tls-creds-x509 / tls-creds-psk objects describe them. */
export type TlsCredentials =
  | {
      readonly kind: 'x509';
      /** PEM server key, certificate and (optionally) CA bundle. */
      readonly key: Buffer;
      readonly cert: Buffer;
      readonly ca?: Buffer;
      /** Require and check a client certificate (qemu's verify-peer). */
      readonly verifyPeer?: boolean;
    }
  | {
      readonly kind: 'psk';
      /** username → key bytes (the keys file holds `username:hexkey` lines). */
      readonly keys: ReadonlyMap<string, Buffer>;
    };

/** What a connection needs to offer STARTTLS. */
export interface TlsUpgrader {
  /** Clients must start TLS before anything else (qemu's behaviour whenever tls-creds are set). */
  readonly required: boolean;
  /** Runs the server side of the TLS handshake on `socket`; resolves with the encrypted stream. */
  upgrade(socket: Socket): Promise<Duplex>;
}

/** A TLS handshake that does not finish in this time is dropped. */
const HANDSHAKE_TIMEOUT_MS = 10000;

/** PSK ciphers GnuTLS clients (qemu, libnbd) negotiate with TLS 1.2. */
const PSK_CIPHERS = 'ECDHE-PSK-AES128-CBC-SHA256:ECDHE-PSK-AES256-CBC-SHA384:DHE-PSK-AES128-GCM-SHA256:DHE-PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384';

function serverOptions(creds: TlsCredentials): tls.TlsOptions {
  if (creds.kind === 'x509') {
    return {
      key: creds.key,
      cert: creds.cert,
      ...(creds.ca ? { ca: creds.ca } : {}),
      requestCert: creds.verifyPeer === true,
      rejectUnauthorized: creds.verifyPeer === true,
      minVersion: 'TLSv1.2',
    };
  }
  return {
    // Node's PSK works with TLS 1.2 only.
    minVersion: 'TLSv1.2',
    maxVersion: 'TLSv1.2',
    ciphers: PSK_CIPHERS,
    pskCallback: (_socket: tls.TLSSocket, identity: string) => creds.keys.get(identity) ?? null,
  };
}

/**
 * A TlsUpgrader for `creds`.
 *
 * @example
 * const server = new NbdServer({ tls: tlsUpgrader({ kind: 'psk', keys: new Map([['qemu', key]]) }) });
 */
export function tlsUpgrader(creds: TlsCredentials, options: { readonly required?: boolean } = {}): TlsUpgrader {
  const opts = serverOptions(creds);
  return {
    required: options.required !== false,
    upgrade: (socket) =>
      new Promise<Duplex>((resolve, reject) => {
        // One tls.Server per handshake: its events then belong to this socket alone.
        const server = tls.createServer(opts);
        const timer = setTimeout(() => fail(new Error('TLS handshake timed out')), HANDSHAKE_TIMEOUT_MS);
        timer.unref();
        const fail = (e: Error): void => {
          clearTimeout(timer);
          socket.destroy();
          reject(new VdiskError('EPERM', `TLS handshake failed: ${e.message}`, { field: 'tls' }, { cause: e }));
        };
        server.once('secureConnection', (secure: tls.TLSSocket) => {
          clearTimeout(timer);
          secure.on('error', () => undefined);
          resolve(secure);
        });
        server.once('tlsClientError', (e) => fail(e));
        socket.once('close', () => fail(new Error('the client closed the connection')));
        server.emit('connection', socket);
      }),
  };
}
