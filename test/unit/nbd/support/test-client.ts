import * as net from 'node:net';
import { SocketReader } from '../../../../src/nbd/server/socket-reader.js';
import {
  ClientFlag,
  Info,
  Opt,
  Rep,
  decodeOptionReplyHeader,
  decodeReplyHeader,
  encodeExportRequest,
  encodeMetaContextRequest,
  encodeOptionHeader,
  encodeRequestHeader,
  replyHeaderLength,
  type ReplyHeader,
  type RequestHeader,
} from '../../../../src/nbd/protocol/index.js';

export interface OptionReplyMessage {
  readonly option: number;
  readonly replyType: number;
  readonly data: Buffer;
}

export type Reply =
  | { readonly kind: 'simple'; readonly error: number; readonly cookie: bigint }
  | { readonly kind: 'chunk'; readonly flags: number; readonly type: number; readonly cookie: bigint; readonly payload: Buffer };

/** A deliberately literal NBD client for tests: every step is explicit, so malformed input is easy to send. */
export class TestClient {
  readonly socket: net.Socket;
  readonly reader: SocketReader;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.reader = new SocketReader(socket);
  }

  static connect(path: string): Promise<TestClient> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection(path, () => resolve(new TestClient(s)));
      s.once('error', reject);
    });
  }

  write(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  async readGreeting(): Promise<Buffer> {
    return this.reader.read(18);
  }

  async readOptionReply(): Promise<OptionReplyMessage> {
    const h = decodeOptionReplyHeader(await this.reader.read(20));
    const data = h.length > 0 ? await this.reader.read(h.length) : Buffer.alloc(0);
    return { option: h.option, replyType: h.replyType, data };
  }

  /** Reads option replies up to and including the final one (ACK or an error). */
  async readOptionReplies(): Promise<OptionReplyMessage[]> {
    const out: OptionReplyMessage[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      out.push(r);
      if (r.replyType === Rep.ACK || r.replyType >= 0x80000000) return out;
    }
  }

  async option(option: number, data: Uint8Array = new Uint8Array(0)): Promise<OptionReplyMessage[]> {
    this.write(encodeOptionHeader(option, data));
    return this.readOptionReplies();
  }

  /** Greeting, flags, optional structured replies and contexts, then GO. Returns size and transmission flags. */
  async handshake(options: { structured?: boolean; contexts?: string[]; name?: string } = {}): Promise<{ size: bigint; flags: number }> {
    await this.readGreeting();
    this.write(Uint8Array.of(0, 0, 0, ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES));
    if (options.structured) await this.option(Opt.STRUCTURED_REPLY);
    if (options.contexts) await this.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest(options.name ?? '', options.contexts));
    const replies = await this.option(Opt.GO, encodeExportRequest(options.name ?? '', [Info.BLOCK_SIZE]));
    const last = replies[replies.length - 1];
    if (!last || last.replyType !== Rep.ACK) throw new Error(`GO failed: ${JSON.stringify(replies.map((r) => r.replyType))}`);
    const info = replies.find((r) => r.replyType === Rep.INFO && r.data.readUInt16BE(0) === Info.EXPORT);
    if (!info) throw new Error('no INFO_EXPORT');
    return { size: info.data.readBigUInt64BE(2), flags: info.data.readUInt16BE(10) };
  }

  request(req: RequestHeader, payload?: Uint8Array): void {
    this.write(encodeRequestHeader(req));
    if (payload) this.write(payload);
  }

  async readReply(): Promise<Reply> {
    const magic = await this.reader.read(4);
    const rest = await this.reader.read(replyHeaderLength(magic.readUInt32BE(0)) - 4);
    const h: ReplyHeader = decodeReplyHeader(Buffer.concat([magic, rest]));
    if (h.kind === 'simple') return h;
    const payload = h.length > 0 ? await this.reader.read(h.length) : Buffer.alloc(0);
    return { kind: 'chunk', flags: h.flags, type: h.type, cookie: h.cookie, payload };
  }

  /** Reads structured chunks of one reply until DONE (assumes no other reply interleaves). */
  async readChunks(): Promise<Array<Extract<Reply, { kind: 'chunk' }>>> {
    const out: Array<Extract<Reply, { kind: 'chunk' }>> = [];
    for (;;) {
      const r = await this.readReply();
      if (r.kind !== 'chunk') throw new Error('expected a structured chunk');
      out.push(r);
      if (r.flags & 1) return out;
    }
  }

  /** Resolves when the server closes the connection. */
  closed(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed || this.socket.readableEnded) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.resume();
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
