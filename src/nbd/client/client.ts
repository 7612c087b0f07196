/**
 * An NBD client: one connection to one export, requests pipelined with
 * cookies, structured replies reassembled per request. Used by the `nbd`
 * node driver (blockdev-add driver=nbd, mirror targets).
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import { VdiskError, type ErrorCode } from '../../errors.js';
import {
  Cmd,
  CmdFlag,
  EXTENDED_REPLY_MAGIC,
  MAX_PAYLOAD,
  NbdErrno,
  ReplyFlag,
  ReplyType,
  SIMPLE_REPLY_MAGIC,
  STRUCTURED_REPLY_MAGIC,
  TransmissionFlag,
} from '../protocol/constants.js';
import { encodeExtendedRequestHeader, encodeRequestHeader, type RequestHeader } from '../protocol/requests.js';
import { decodeString, protocolError, viewOf } from '../protocol/wire.js';
import { ReplyWriter } from '../server/reply-writer.js';
import { EndOfStream, SocketReader } from '../server/socket-reader.js';
import { greet, negotiateExport, requestStartTls, type ClientIo, type Negotiated } from './handshake.js';
import type { NbdAddress } from './uri.js';

/** Client-side TLS: PSK (username + key) or x509 (CA to check the server with). */
export type ClientTls =
  | { readonly kind: 'psk'; readonly identity: string; readonly key: Buffer }
  | { readonly kind: 'x509'; readonly ca?: Buffer; readonly cert?: Buffer; readonly key?: Buffer; readonly servername?: string };

export interface NbdConnectOptions {
  readonly address: NbdAddress;
  readonly exportName: string;
  readonly tls?: ClientTls;
  /** Ask for NBD_OPT_EXTENDED_HEADERS (64-bit lengths); servers that refuse it get structured replies. */
  readonly extendedHeaders?: boolean;
  /** Metadata contexts to select (default base:allocation); query them with `contextStatus`. */
  readonly contexts?: readonly string[];
}

/** One raw block-status descriptor of any context. */
export interface ContextExtent {
  readonly length: number;
  readonly flags: number;
}

/** One block-status descriptor of base:allocation. */
export interface StatusExtent {
  readonly length: number;
  readonly hole: boolean;
  readonly zero: boolean;
}

interface Pending {
  readonly type: number;
  readonly offset: number;
  /** READ: where the data goes. */
  readonly buf?: Uint8Array;
  readonly extents: StatusExtent[];
  /** BLOCK_STATUS of one chosen context: its id and where its descriptors go. */
  readonly context?: { readonly id: number; readonly out: ContextExtent[] };
  error: VdiskError | null;
  resolve(): void;
  reject(e: unknown): void;
}

/** Largest structured reply chunk payload we accept besides data chunks. */
const MAX_CHUNK = 1024 * 1024;

const ERRNO_CODES: Readonly<Record<number, ErrorCode>> = {
  [NbdErrno.EPERM]: 'EPERM',
  [NbdErrno.EIO]: 'EIO',
  [NbdErrno.ENOMEM]: 'EIO',
  [NbdErrno.EINVAL]: 'EINVAL',
  [NbdErrno.ENOSPC]: 'ENOSPC',
  [NbdErrno.EOVERFLOW]: 'EINVAL',
  [NbdErrno.ENOTSUP]: 'ENOTSUP',
  [NbdErrno.ESHUTDOWN]: 'EIO',
};

function connectSocket(address: NbdAddress): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = 'socketPath' in address ? net.createConnection(address.socketPath) : net.createConnection(address.port, address.host);
    s.once('connect', () => {
      s.off('error', reject);
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', (e) =>
      reject(new VdiskError('EIO', `Cannot connect to NBD server at ${'socketPath' in address ? address.socketPath : `${address.host}:${address.port}`}: ${e.message}`, {}, { cause: e })),
    );
  });
}

function wrapTls(socket: net.Socket, config: ClientTls): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const options: tls.ConnectionOptions =
      config.kind === 'psk'
        ? {
            socket,
            minVersion: 'TLSv1.2',
            maxVersion: 'TLSv1.2',
            ciphers: 'PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:ECDHE-PSK-AES128-CBC-SHA256',
            pskCallback: () => ({ psk: config.key, identity: config.identity }),
            checkServerIdentity: () => undefined,
          }
        : {
            socket,
            minVersion: 'TLSv1.2',
            ...(config.ca ? { ca: config.ca } : {}),
            ...(config.cert ? { cert: config.cert } : {}),
            ...(config.key ? { key: config.key } : {}),
            ...(config.servername ? { servername: config.servername } : {}),
          };
    const secure = tls.connect(options, () => resolve(secure));
    secure.once('error', (e) => reject(new VdiskError('EPERM', `TLS handshake with the NBD server failed: ${e.message}`, { field: 'tls' }, { cause: e })));
  });
}

/**
 * @example
 * const c = await NbdClient.connect({ address: { socketPath: '/tmp/nbd.sock' }, exportName: '' });
 * const buf = new Uint8Array(4096);
 * await c.read(0, buf);
 * await c.close();
 */
export class NbdClient {
  readonly size: number;
  readonly flags: number;
  readonly structuredReplies: boolean;
  readonly extendedHeaders: boolean;
  /** Selected metadata contexts and their ids. */
  readonly contextIds: ReadonlyMap<string, number>;
  readonly baseAllocationId: number | null;
  readonly preferredBlockSize: number;
  readonly #io: ClientIo;
  readonly #stream: Duplex;
  readonly #pending = new Map<bigint, Pending>();
  readonly #inFlight = new Set<Promise<void>>();
  #nextCookie = 1n;
  #failure: VdiskError | null = null;
  readonly #done: Promise<void>;

  private constructor(io: ClientIo, stream: Duplex, n: Negotiated) {
    this.#io = io;
    this.#stream = stream;
    this.size = n.size;
    this.flags = n.transmissionFlags;
    this.structuredReplies = n.structuredReplies;
    this.extendedHeaders = n.extendedHeaders;
    this.contextIds = n.contextIds;
    this.baseAllocationId = n.baseAllocationId;
    this.preferredBlockSize = n.blockSizes?.preferred ?? 4096;
    this.#done = this.#receiveLoop();
  }

  static async connect(options: NbdConnectOptions): Promise<NbdClient> {
    const socket = await connectSocket(options.address);
    try {
      let stream: Duplex = socket;
      const io: ClientIo = { reader: new SocketReader(socket), writer: new ReplyWriter(socket) };
      await greet(io);
      if (options.tls) {
        await requestStartTls(io);
        io.reader.detach();
        stream = await wrapTls(socket, options.tls);
        io.reader = new SocketReader(stream);
        io.writer = new ReplyWriter(stream);
      }
      const n = await negotiateExport(io, options.exportName, {
        ...(options.extendedHeaders !== undefined ? { extendedHeaders: options.extendedHeaders } : {}),
        ...(options.contexts ? { contexts: options.contexts } : {}),
      });
      return new NbdClient(io, stream, n);
    } catch (e) {
      socket.destroy();
      throw e;
    }
  }

  get readOnly(): boolean {
    return (this.flags & TransmissionFlag.READ_ONLY) !== 0;
  }

  can(flag: number): boolean {
    return (this.flags & flag) !== 0;
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    for (let done = 0; done < buf.byteLength; done += MAX_PAYLOAD) {
      const part = buf.subarray(done, Math.min(buf.byteLength, done + MAX_PAYLOAD));
      await this.#request({ type: Cmd.READ, offset: offset + done, length: part.byteLength, buf: part });
    }
  }

  async write(offset: number, data: Uint8Array, fua = false): Promise<void> {
    for (let done = 0; done < data.byteLength; done += MAX_PAYLOAD) {
      const part = data.subarray(done, Math.min(data.byteLength, done + MAX_PAYLOAD));
      await this.#request({ type: Cmd.WRITE, offset: offset + done, length: part.byteLength, payload: part, flags: fua ? CmdFlag.FUA : 0 });
    }
  }

  flush(): Promise<void> {
    return this.#request({ type: Cmd.FLUSH, offset: 0, length: 0 });
  }

  async trim(offset: number, length: number): Promise<void> {
    for (let done = 0; done < length; done += 0x80000000) {
      await this.#request({ type: Cmd.TRIM, offset: offset + done, length: Math.min(length - done, 0x80000000) });
    }
  }

  async writeZeroes(offset: number, length: number, flags: number): Promise<void> {
    // With extended headers one request covers any length (64-bit effect lengths).
    const step = this.extendedHeaders ? Number.MAX_SAFE_INTEGER : 0x80000000;
    for (let done = 0; done < length; done += step) {
      await this.#request({ type: Cmd.WRITE_ZEROES, offset: offset + done, length: Math.min(length - done, step), flags });
    }
  }

  /** Raw descriptors of the selected context `name` over [offset, offset+length); the server may describe less than asked. */
  async contextStatus(name: string, offset: number, length: number): Promise<ContextExtent[]> {
    const id = this.contextIds.get(name);
    if (id === undefined) throw new VdiskError('ENOTSUP', `NBD metadata context '${name}' was not selected`, { field: 'context' });
    const out: ContextExtent[] = [];
    const max = this.extendedHeaders ? Number.MAX_SAFE_INTEGER : 0xffffffff;
    await this.#request({ type: Cmd.BLOCK_STATUS, offset, length: Math.min(length, max), extents: [], context: { id, out } });
    return out;
  }

  /** base:allocation over [offset, offset+length); the server may describe less than asked. */
  async blockStatus(offset: number, length: number): Promise<StatusExtent[]> {
    const extents: StatusExtent[] = [];
    await this.#request({ type: Cmd.BLOCK_STATUS, offset, length: Math.min(length, this.extendedHeaders ? Number.MAX_SAFE_INTEGER : 0xffffffff), extents });
    return extents;
  }

  /** Sends DISC and closes the connection once every request was answered. */
  async close(): Promise<void> {
    if (!this.#failure) {
      await Promise.allSettled(this.#inFlight);
      await this.#io.writer.send([this.#header({ flags: 0, type: Cmd.DISC, cookie: this.#nextCookie++, offset: 0n, length: 0 })]);
      this.#failure = new VdiskError('EIO', 'NBD connection closed');
    }
    this.#stream.end();
    this.#io.reader.stop('closed');
    await this.#done;
    this.#stream.destroy();
  }

  /** Compact header, or extended with PAYLOAD_LEN on writes (proto.md makes it mandatory there). */
  #header(h: RequestHeader): Uint8Array {
    if (!this.extendedHeaders) return encodeRequestHeader(h);
    return encodeExtendedRequestHeader(h.type === Cmd.WRITE ? { ...h, flags: h.flags | CmdFlag.PAYLOAD_LEN } : h);
  }

  #request(r: {
    type: number;
    offset: number;
    length: number;
    flags?: number;
    payload?: Uint8Array;
    buf?: Uint8Array;
    extents?: StatusExtent[];
    context?: { readonly id: number; readonly out: ContextExtent[] };
  }): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    const cookie = this.#nextCookie++;
    const done = new Promise<void>((resolve, reject) => {
      this.#pending.set(cookie, {
        type: r.type,
        offset: r.offset,
        ...(r.buf ? { buf: r.buf } : {}),
        extents: r.extents ?? [],
        ...(r.context ? { context: r.context } : {}),
        error: null,
        resolve,
        reject,
      });
      const header = this.#header({ flags: r.flags ?? 0, type: r.type, cookie, offset: BigInt(r.offset), length: r.length });
      void this.#io.writer.send(r.payload ? [header, r.payload] : [header]);
    });
    this.#inFlight.add(done);
    const forget = (): void => void this.#inFlight.delete(done);
    done.then(forget, forget);
    return done;
  }

  async #receiveLoop(): Promise<void> {
    try {
      for (;;) {
        const magicBuf = await this.#io.reader.read(4);
        const magic = magicBuf.readUInt32BE(0);
        if (magic === SIMPLE_REPLY_MAGIC) await this.#simpleReply();
        else if (magic === STRUCTURED_REPLY_MAGIC) await this.#chunk(false);
        else if (magic === EXTENDED_REPLY_MAGIC) await this.#chunk(true);
        else throw protocolError(`bad reply magic 0x${magic.toString(16)}`, 'reply_magic');
      }
    } catch (e) {
      const err = e instanceof EndOfStream ? new VdiskError('EIO', `NBD server connection lost: ${e.message}`) : e instanceof VdiskError ? e : new VdiskError('EIO', String(e));
      this.#failure ??= err;
      for (const p of this.#pending.values()) p.reject(this.#failure);
      this.#pending.clear();
    }
  }

  #take(cookie: bigint): Pending {
    const p = this.#pending.get(cookie);
    if (!p) throw protocolError(`reply for unknown cookie ${cookie}`, 'cookie');
    return p;
  }

  async #simpleReply(): Promise<void> {
    const h = await this.#io.reader.read(12);
    const error = h.readUInt32BE(0);
    const cookie = h.readBigUInt64BE(4);
    const p = this.#take(cookie);
    this.#pending.delete(cookie);
    if (error !== 0) return p.reject(this.#errnoError(error, '', p));
    if (p.type === Cmd.READ && p.buf) p.buf.set(await this.#io.reader.read(p.buf.byteLength));
    p.resolve();
  }

  /** One reply chunk, after its magic: 16 more header bytes, or 28 for an extended chunk (which echoes the offset, u64 length). */
  async #chunk(extended: boolean): Promise<void> {
    const h = await this.#io.reader.read(extended ? 28 : 16);
    const flags = h.readUInt16BE(0);
    const type = h.readUInt16BE(2);
    const cookie = h.readBigUInt64BE(4);
    let length: number;
    if (extended) {
      const big = h.readBigUInt64BE(20);
      if (big > BigInt(MAX_PAYLOAD + 64)) throw protocolError(`extended reply chunk of ${big} bytes`, 'chunk');
      length = Number(big);
    } else {
      length = h.readUInt32BE(12);
    }
    const p = this.#take(cookie);
    if (type === ReplyType.OFFSET_DATA) {
      if (length < 8 || !p.buf) throw protocolError(`unexpected OFFSET_DATA chunk of ${length} bytes`, 'chunk');
      const at = Number((await this.#io.reader.read(8)).readBigUInt64BE(0)) - p.offset;
      const n = length - 8;
      if (at < 0 || at + n > p.buf.byteLength) throw protocolError('OFFSET_DATA chunk outside the request', 'chunk');
      p.buf.set(await this.#io.reader.read(n), at);
    } else {
      if (length > MAX_CHUNK) throw protocolError(`reply chunk of ${length} bytes`, 'chunk');
      const data = await this.#io.reader.read(length);
      this.#chunkPayload(p, type, data);
    }
    if (flags & ReplyFlag.DONE) {
      this.#pending.delete(cookie);
      if (p.error) p.reject(p.error);
      else p.resolve();
    }
  }

  #chunkPayload(p: Pending, type: number, data: Buffer): void {
    const v = viewOf(data);
    if (type === ReplyType.NONE) return;
    if (type === ReplyType.OFFSET_HOLE) {
      if (data.byteLength !== 12 || !p.buf) throw protocolError('bad OFFSET_HOLE chunk', 'chunk');
      const at = Number(v.getBigUint64(0)) - p.offset;
      const n = v.getUint32(8);
      if (at < 0 || at + n > p.buf.byteLength) throw protocolError('OFFSET_HOLE chunk outside the request', 'chunk');
      p.buf.fill(0, at, at + n);
      return;
    }
    if (type === ReplyType.BLOCK_STATUS || type === ReplyType.BLOCK_STATUS_EXT) {
      const wide = type === ReplyType.BLOCK_STATUS_EXT;
      // Each form belongs to one header style (proto.md): a mismatch means the stream is not what we think.
      if (wide !== this.extendedHeaders) throw protocolError(`block status chunk type ${type} with${this.extendedHeaders ? '' : 'out'} extended headers`, 'chunk');
      const descriptors = wide ? decodeWideStatus(data) : decodeNarrowStatus(data);
      const id = v.getUint32(0);
      if (p.context) {
        if (id === p.context.id) p.context.out.push(...descriptors);
        return;
      }
      if (id !== this.baseAllocationId) return;
      for (const d of descriptors) p.extents.push({ length: d.length, hole: (d.flags & 1) !== 0, zero: (d.flags & 2) !== 0 });
      return;
    }
    if (type & 0x8000) {
      if (data.byteLength < 6) throw protocolError('bad error chunk', 'chunk');
      const mlen = v.getUint16(4);
      const message = 6 + mlen <= data.byteLength ? (decodeString(data.subarray(6, 6 + mlen)) ?? '') : '';
      p.error ??= this.#errnoError(v.getUint32(0), message, p);
      return;
    }
    // Unknown non-error chunk types are ignored, as proto.md allows.
  }

  #errnoError(errno: number, message: string, p: Pending): VdiskError {
    const code = ERRNO_CODES[errno] ?? 'EIO';
    return new VdiskError(code, `NBD server failed the request at offset ${p.offset}: errno ${errno}${message ? ` (${message})` : ''}`, { offset: p.offset });
  }
}

/** BLOCK_STATUS payload: u32 context id, n × (u32 length, u32 flags), n ≥ 1. */
function decodeNarrowStatus(data: Buffer): ContextExtent[] {
  if (data.byteLength < 12 || (data.byteLength - 4) % 8 !== 0) throw protocolError(`bad BLOCK_STATUS chunk of ${data.byteLength} bytes`, 'chunk');
  const out: ContextExtent[] = [];
  for (let i = 4; i < data.byteLength; i += 8) out.push({ length: data.readUInt32BE(i), flags: data.readUInt32BE(i + 4) });
  return out;
}

/** BLOCK_STATUS_EXT payload: u32 context id, u32 count, count × (u64 length, u64 status). */
function decodeWideStatus(data: Buffer): ContextExtent[] {
  if (data.byteLength < 24 || (data.byteLength - 8) % 16 !== 0) throw protocolError(`bad BLOCK_STATUS_EXT chunk of ${data.byteLength} bytes`, 'chunk');
  const count = data.readUInt32BE(4);
  if (count !== (data.byteLength - 8) / 16) throw protocolError(`BLOCK_STATUS_EXT says ${count} descriptors in ${data.byteLength} bytes`, 'chunk');
  const out: ContextExtent[] = [];
  for (let i = 8; i < data.byteLength; i += 16) {
    const length = data.readBigUInt64BE(i);
    if (length === 0n || length > BigInt(Number.MAX_SAFE_INTEGER)) throw protocolError(`block status descriptor of ${length} bytes`, 'chunk');
    // Every context we know fits in 32 bits of status; the high half is ignored.
    out.push({ length: Number(length), flags: Number(data.readBigUInt64BE(i + 8) & 0xffffffffn) });
  }
  return out;
}
