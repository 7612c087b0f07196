/**
 * The `--object` / object-add credential objects of QEMU that vdisk knows:
 * tls-creds-x509 (dir with ca-cert.pem, server-cert.pem, server-key.pem or the
 * client-* pair) and tls-creds-psk (dir with keys.psk, lines `username:hexkey`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VdiskError } from '../errors.js';
import { tlsUpgrader, type ClientTls, type TlsCredentials, type TlsUpgrader } from '../nbd/index.js';

type Props = Readonly<Record<string, unknown>>;

export interface TlsObject {
  readonly id: string;
  readonly qomType: 'tls-creds-x509' | 'tls-creds-psk';
  readonly endpoint: 'server' | 'client';
  readonly dir: string;
  readonly props: Props;
}

/** Largest credential file read (a keys file or PEM bundle is a few KiB). */
const MAX_FILE = 1024 * 1024;

function readCredFile(dir: string, name: string, required: boolean): Buffer | undefined {
  const file = path.join(dir, name);
  try {
    const st = fs.statSync(file);
    if (st.size > MAX_FILE) throw new VdiskError('EINVAL', `Credential file '${file}' is too large (${st.size} bytes)`, { file });
    return fs.readFileSync(file);
  } catch (e) {
    if (e instanceof VdiskError) throw e;
    if (!required) return undefined;
    throw new VdiskError('ENOENT', `Unable to access credentials ${file}: No such file or directory`, { file }, { cause: e });
  }
}

function bool(v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v === 'boolean') return v;
  if (v === 'on' || v === 'yes' || v === 'true') return true;
  if (v === 'off' || v === 'no' || v === 'false') return false;
  throw new VdiskError('EINVAL', `Invalid boolean '${String(v)}'`, { field: 'verify-peer' });
}

/** Parses a keys.psk file: `username:hexkey` per line. */
export function parsePskKeys(text: string, file: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const colon = line.indexOf(':');
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^([0-9a-fA-F]{2})+$/.test(hex)) {
      throw new VdiskError('EINVAL', `${file} line ${i + 1}: expected 'username:hexkey'`, { file, field: 'keys.psk' });
    }
    keys.set(line.slice(0, colon), Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new VdiskError('EINVAL', `${file} holds no keys`, { file });
  return keys;
}

/** Credential objects by id, as one daemon sees them. */
export class TlsObjects {
  readonly #objects = new Map<string, TlsObject>();

  /** object-add / --object: checks the type and props, and that the files are there. */
  add(qomType: string, props: Props): TlsObject {
    const id = props['id'];
    if (typeof id !== 'string' || id === '') throw new VdiskError('EINVAL', "Parameter 'id' is missing", { field: 'id' });
    if (qomType !== 'tls-creds-x509' && qomType !== 'tls-creds-psk') throw new VdiskError('EINVAL', `Invalid parameter type for 'qom-type', value '${qomType}' is not supported`, { field: 'qom-type' });
    if (this.#objects.has(id)) throw new VdiskError('EINVAL', `attempt to add duplicate property '${id}' to object`, { field: 'id' });
    const dir = props['dir'];
    if (typeof dir !== 'string') throw new VdiskError('EINVAL', `${qomType} '${id}' needs dir=`, { field: 'dir' });
    const endpoint = props['endpoint'] ?? 'client';
    if (endpoint !== 'server' && endpoint !== 'client') throw new VdiskError('EINVAL', `Invalid endpoint '${String(endpoint)}'`, { field: 'endpoint' });
    const obj: TlsObject = { id, qomType, endpoint, dir, props };
    // Load once now so a wrong path fails at startup, as in QEMU.
    if (endpoint === 'server') this.serverCredentials(obj);
    else this.clientTlsOf(obj);
    this.#objects.set(id, obj);
    return obj;
  }

  /**
   * object-del. As in QEMU, what already uses the object (an NBD server
   * started with it, a client node) keeps what it took from it; only the id
   * goes.
   */
  delete(id: string): void {
    if (!this.#objects.delete(id)) throw new VdiskError('ENOENT', `object '${id}' not found`, { field: 'id' });
  }

  get(id: string): TlsObject {
    const o = this.#objects.get(id);
    if (!o) throw new VdiskError('ENOENT', `No TLS credentials with id '${id}'`, { field: 'tls-creds' });
    return o;
  }

  /** What an NBD server with `tls-creds=id` offers: TLS, required for every client. */
  upgrader(id: string): TlsUpgrader {
    const o = this.get(id);
    if (o.endpoint !== 'server') throw new VdiskError('EINVAL', `Expecting TLS credentials with a server endpoint`, { field: 'tls-creds' });
    return tlsUpgrader(this.serverCredentials(o), { required: true });
  }

  clientTls(id: string): ClientTls {
    const o = this.get(id);
    if (o.endpoint !== 'client') throw new VdiskError('EINVAL', `Expecting TLS credentials with a client endpoint`, { field: 'tls-creds' });
    return this.clientTlsOf(o);
  }

  serverCredentials(o: TlsObject): TlsCredentials {
    if (o.qomType === 'tls-creds-psk') {
      const file = path.join(o.dir, 'keys.psk');
      return { kind: 'psk', keys: parsePskKeys((readCredFile(o.dir, 'keys.psk', true) ?? Buffer.alloc(0)).toString('utf8'), file) };
    }
    const verifyPeer = bool(o.props['verify-peer'], true);
    const ca = readCredFile(o.dir, 'ca-cert.pem', verifyPeer);
    return {
      kind: 'x509',
      key: readCredFile(o.dir, 'server-key.pem', true) ?? Buffer.alloc(0),
      cert: readCredFile(o.dir, 'server-cert.pem', true) ?? Buffer.alloc(0),
      ...(ca ? { ca } : {}),
      verifyPeer,
    };
  }

  clientTlsOf(o: TlsObject): ClientTls {
    if (o.qomType === 'tls-creds-psk') {
      const username = typeof o.props['username'] === 'string' ? o.props['username'] : 'qemu';
      const keys = parsePskKeys((readCredFile(o.dir, 'keys.psk', true) ?? Buffer.alloc(0)).toString('utf8'), path.join(o.dir, 'keys.psk'));
      const key = keys.get(username);
      if (!key) throw new VdiskError('EINVAL', `No key for username '${username}' in ${path.join(o.dir, 'keys.psk')}`, { field: 'username' });
      return { kind: 'psk', identity: username, key };
    }
    const ca = readCredFile(o.dir, 'ca-cert.pem', true);
    const cert = readCredFile(o.dir, 'client-cert.pem', false);
    const key = readCredFile(o.dir, 'client-key.pem', false);
    return { kind: 'x509', ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
  }
}
