import {
  Info,
  MAX_OPTION_LENGTH,
  MAX_SKIPPABLE_OPTION_LENGTH,
  MAX_STRING_LENGTH,
  OPTION_HEADER_LENGTH,
  Opt,
  Rep,
} from '../protocol/constants.js';
import { decodeClientFlags, encodeGreeting } from '../protocol/handshake.js';
import {
  decodeOptionHeader,
  encodeExportNameReply,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContextReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerReply,
  parseExportRequest,
  parseMetaContextRequest,
} from '../protocol/options.js';
import { decodeString, protocolError } from '../protocol/wire.js';
import type { NbdExport } from './export.js';
import { matchListQueries, matchSetQueries, type MetaContext } from './meta-context.js';
import type { ReplyWriter } from './reply-writer.js';
import type { RequestReader } from './socket-reader.js';

/** How the server finds exports by name. */
export interface ExportTable {
  /** The export a client gets for `name`; "" may name a default export. */
  find(name: string): NbdExport | undefined;
  list(): readonly NbdExport[];
}

/** What a successful handshake agreed on. */
export interface Agreement {
  readonly export: NbdExport;
  readonly structuredReplies: boolean;
  /** NBD_OPT_EXTENDED_HEADERS: 32-byte requests and reply chunks; implies structured replies. */
  readonly extendedHeaders: boolean;
  readonly metaContexts: readonly MetaContext[];
}

interface State {
  structuredReplies: boolean;
  extendedHeaders: boolean;
  noZeroes: boolean;
  /** Contexts selected by SET_META_CONTEXT, valid for this export name only. */
  selected: { exportName: string; contexts: MetaContext[] } | null;
  /** TLS was started on this connection. */
  secure: boolean;
}

/** The current reader and writer of a connection; STARTTLS replaces both. */
export interface NegotiationIo {
  reader: RequestReader;
  writer: ReplyWriter;
}

/** TLS as the negotiation sees it. */
export interface NegotiationTls {
  /** Every option but STARTTLS and ABORT is refused until TLS is up (qemu with tls-creds). */
  readonly required: boolean;
  /** Runs the TLS handshake on the connection and replaces the io's reader and writer. */
  start(): Promise<void>;
}

/**
 * Runs the fixed newstyle handshake up to transmission. Resolves with the
 * agreement, or null when the client aborted or left; throws on a protocol
 * violation after which the connection must be dropped.
 */
export async function negotiate(io: NegotiationIo, exports: ExportTable, tls?: NegotiationTls): Promise<Agreement | null> {
  await io.writer.send([encodeGreeting()]);
  const flags = decodeClientFlags(await io.reader.read(4));
  const state: State = { structuredReplies: false, extendedHeaders: false, noZeroes: flags.noZeroes, selected: null, secure: false };
  for (;;) {
    const { reader, writer } = io;
    const header = decodeOptionHeader(await reader.read(OPTION_HEADER_LENGTH));
    const { option, length } = header;
    if (length > MAX_OPTION_LENGTH) {
      // EXPORT_NAME has no error reply; absurd lengths are not worth reading through.
      if (option === Opt.EXPORT_NAME || length > MAX_SKIPPABLE_OPTION_LENGTH) {
        throw protocolError(`option ${option} with ${length} bytes of data`, 'option_length');
      }
      await reader.skip(length);
      await writer.send([encodeOptionError(option, Rep.ERR_TOO_BIG, `option data of ${length} bytes is too long`)]);
      continue;
    }
    const data = await reader.read(length);
    const outcome = await handleOption(option, data, { writer, exports, state, ...(tls ? { tls } : {}) });
    if (outcome === 'abort') return null;
    if (outcome !== 'continue') return outcome;
  }
}

interface Ctx {
  readonly writer: ReplyWriter;
  readonly exports: ExportTable;
  readonly state: State;
  readonly tls?: NegotiationTls;
}

async function startTls(option: number, data: Buffer, ctx: Ctx): Promise<'continue'> {
  const { writer, state, tls } = ctx;
  if (!tls) {
    await writer.send([encodeOptionError(option, Rep.ERR_POLICY, 'TLS is not configured on this server')]);
    return 'continue';
  }
  if (state.secure) {
    await writer.send([encodeOptionError(option, Rep.ERR_INVALID, 'TLS is already active')]);
    return 'continue';
  }
  if (data.byteLength !== 0) {
    await writer.send([encodeOptionError(option, Rep.ERR_INVALID, 'NBD_OPT_STARTTLS takes no data')]);
    return 'continue';
  }
  await writer.send([encodeOptionReply(option, Rep.ACK)]);
  await tls.start();
  // proto.md: everything negotiated before TLS is forgotten once it is up.
  state.secure = true;
  state.structuredReplies = false;
  state.extendedHeaders = false;
  state.selected = null;
  return 'continue';
}

async function handleOption(option: number, data: Buffer, ctx: Ctx): Promise<Agreement | 'continue' | 'abort'> {
  const { writer, state } = ctx;
  const fail = async (reply: number, message: string): Promise<'continue'> => {
    await writer.send([encodeOptionError(option, reply, message)]);
    return 'continue';
  };
  if (ctx.tls?.required && !state.secure && option !== Opt.STARTTLS && option !== Opt.ABORT) {
    // EXPORT_NAME has no error reply: the connection is dropped.
    if (option === Opt.EXPORT_NAME) throw protocolError('NBD_OPT_EXPORT_NAME before STARTTLS on a server that requires TLS', 'option');
    return fail(Rep.ERR_TLS_REQD, 'TLS is required on this server: use NBD_OPT_STARTTLS');
  }
  switch (option) {
    case Opt.EXPORT_NAME: {
      // proto.md: after EXTENDED_HEADERS the client must use GO; EXPORT_NAME has no error reply, so drop it.
      if (state.extendedHeaders) throw protocolError('NBD_OPT_EXPORT_NAME after NBD_OPT_EXTENDED_HEADERS', 'option');
      const name = decodeString(data);
      const exp = name === null || data.byteLength > MAX_STRING_LENGTH ? undefined : ctx.exports.find(name);
      // No error reply exists for EXPORT_NAME: an unknown export means closing the connection.
      if (!exp) throw protocolError(`unknown export '${name ?? '(invalid name)'}'`, 'export_name');
      await writer.send([encodeExportNameReply(exp.size, exp.transmissionFlags(state.structuredReplies), state.noZeroes)]);
      return agreement(exp, state);
    }
    case Opt.ABORT:
      await writer.send([encodeOptionReply(option, Rep.ACK)]);
      return 'abort';
    case Opt.LIST: {
      if (data.byteLength !== 0) return fail(Rep.ERR_INVALID, 'NBD_OPT_LIST takes no data');
      await writer.send([...ctx.exports.list().map((e) => encodeServerReply(option, e.name, e.description)), encodeOptionReply(option, Rep.ACK)]);
      return 'continue';
    }
    case Opt.STARTTLS:
      return startTls(option, data, ctx);
    case Opt.STRUCTURED_REPLY:
      if (data.byteLength !== 0) return fail(Rep.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
      // As qemu: once extended headers are on, compact structured replies cannot be chosen instead.
      if (state.extendedHeaders) return fail(Rep.ERR_EXT_HEADER_REQD, 'extended headers already negotiated');
      if (state.structuredReplies) return fail(Rep.ERR_INVALID, 'structured replies already negotiated');
      state.structuredReplies = true;
      await writer.send([encodeOptionReply(option, Rep.ACK)]);
      return 'continue';
    case Opt.EXTENDED_HEADERS:
      if (data.byteLength !== 0) return fail(Rep.ERR_INVALID, 'NBD_OPT_EXTENDED_HEADERS takes no data');
      if (state.extendedHeaders) return fail(Rep.ERR_INVALID, 'extended headers already negotiated');
      // Extended headers carry structured replies with them (and take precedence over them).
      state.extendedHeaders = true;
      state.structuredReplies = true;
      await writer.send([encodeOptionReply(option, Rep.ACK)]);
      return 'continue';
    case Opt.INFO:
    case Opt.GO:
      return infoOrGo(option, data, ctx);
    case Opt.LIST_META_CONTEXT:
    case Opt.SET_META_CONTEXT:
      return metaContext(option, data, ctx);
    default:
      return fail(Rep.ERR_UNSUP, `option ${option} is not supported`);
  }
}

function agreement(exp: NbdExport, state: State): Agreement {
  const contexts = state.selected && state.selected.exportName === exp.name ? state.selected.contexts : [];
  return { export: exp, structuredReplies: state.structuredReplies, extendedHeaders: state.extendedHeaders, metaContexts: contexts };
}

async function infoOrGo(option: number, data: Buffer, ctx: Ctx): Promise<Agreement | 'continue'> {
  const { writer, state } = ctx;
  const req = parseExportRequest(data);
  if (!req.ok) {
    await writer.send([encodeOptionError(option, req.reply, req.message)]);
    return 'continue';
  }
  const exp = ctx.exports.find(req.name);
  if (!exp) {
    await writer.send([encodeOptionError(option, Rep.ERR_UNKNOWN, `export '${req.name}' not present`)]);
    return 'continue';
  }
  const replies: Uint8Array[] = [];
  // Sent whether asked or not (clients ignore unrequested infos); the same for INFO and GO.
  replies.push(encodeInfoBlockSize(option, exp.blockSizes()));
  if (req.infos.includes(Info.NAME)) replies.push(encodeInfoString(option, Info.NAME, exp.name));
  if (req.infos.includes(Info.DESCRIPTION) && exp.description !== '') {
    replies.push(encodeInfoString(option, Info.DESCRIPTION, exp.description));
  }
  replies.push(encodeInfoExport(option, exp.size, exp.transmissionFlags(state.structuredReplies)));
  replies.push(encodeOptionReply(option, Rep.ACK));
  await writer.send(replies);
  return option === Opt.GO ? agreement(exp, state) : 'continue';
}

async function metaContext(option: number, data: Buffer, ctx: Ctx): Promise<'continue'> {
  const { writer, state } = ctx;
  const isSet = option === Opt.SET_META_CONTEXT;
  // proto.md: a SET replaces the previous selection even when it fails.
  if (isSet) state.selected = null;
  const fail = async (reply: number, message: string): Promise<'continue'> => {
    await writer.send([encodeOptionError(option, reply, message)]);
    return 'continue';
  };
  if (!state.structuredReplies) return fail(Rep.ERR_INVALID, 'structured replies must be negotiated first');
  const req = parseMetaContextRequest(data);
  if (!req.ok) return fail(req.reply, req.message);
  const exp = ctx.exports.find(req.exportName);
  if (!exp) return fail(Rep.ERR_UNKNOWN, `export '${req.exportName}' not present`);
  const offered = exp.metaContexts();
  const chosen = isSet ? matchSetQueries(offered, req.queries) : matchListQueries(offered, req.queries);
  // LIST replies carry id 0 (reserved); SET replies carry the id BLOCK_STATUS will use.
  const replies = chosen.map((c) => encodeMetaContextReply(option, isSet ? c.id : 0, c.name));
  replies.push(encodeOptionReply(option, Rep.ACK));
  if (isSet) state.selected = { exportName: exp.name, contexts: chosen };
  await writer.send(replies);
  return 'continue';
}
