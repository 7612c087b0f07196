/**
 * NBD protocol numbers, as doc/proto.md of NetworkBlockDevice/nbd defines them.
 * All integers on the wire are big-endian.
 */

/** "NBDMAGIC": the first 8 bytes the server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": second word of the newstyle greeting and prefix of every client option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** Prefix of every option reply. */
export const OPTION_REPLY_MAGIC = 0x0003e889045565a9n;
export const REQUEST_MAGIC = 0x25609513;
export const EXTENDED_REQUEST_MAGIC = 0x21e41c71;
export const SIMPLE_REPLY_MAGIC = 0x67446698;
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef;
/** Reply chunk magic once NBD_OPT_EXTENDED_HEADERS is agreed. */
export const EXTENDED_REPLY_MAGIC = 0x6e8a278c;

export const DEFAULT_PORT = 10809;

/** Handshake flags (server → client, u16). */
export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Client flags (client → server, u32). */
export const ClientFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Option numbers (`NBD_OPT_*`). */
export const Opt = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const;

/** Option reply types (`NBD_REP_*`); errors have bit 31 set. */
export const Rep = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: 0x80000001,
  ERR_POLICY: 0x80000002,
  ERR_INVALID: 0x80000003,
  ERR_PLATFORM: 0x80000004,
  ERR_TLS_REQD: 0x80000005,
  ERR_UNKNOWN: 0x80000006,
  ERR_SHUTDOWN: 0x80000007,
  ERR_BLOCK_SIZE_REQD: 0x80000008,
  ERR_TOO_BIG: 0x80000009,
  ERR_EXT_HEADER_REQD: 0x8000000a,
} as const;

/** Info types inside `NBD_REP_INFO` (`NBD_INFO_*`). */
export const Info = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission flags (u16, sent with the export size). */
export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
  BLOCK_STATUS_PAYLOAD: 1 << 12,
} as const;

/** Request types (`NBD_CMD_*`). */
export const Cmd = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags (u16). */
export const CmdFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
  PAYLOAD_LEN: 1 << 5,
} as const;

/** Structured reply chunk types (`NBD_REPLY_TYPE_*`); errors have bit 15 set. */
export const ReplyType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  /** 64-bit descriptors; the only block status chunk allowed with extended headers. */
  BLOCK_STATUS_EXT: 6,
  ERROR: 0x8001,
  ERROR_OFFSET: 0x8002,
} as const;

/** Structured reply chunk flags. */
export const ReplyFlag = {
  DONE: 1 << 0,
} as const;

/** Error numbers carried in replies (`NBD_E*`). */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** `base:allocation` status bits. */
export const StateFlag = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const;

export const META_BASE_ALLOCATION = 'base:allocation';
export const META_ALLOCATION_DEPTH = 'qemu:allocation-depth';
/** Prefix of qemu's dirty bitmap contexts: `qemu:dirty-bitmap:NAME`. */
export const META_DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';

/** `qemu:dirty-bitmap:*` status bit. */
export const DIRTY_STATE = 1 << 0;

/** Longest string (export name, description, context name, message) the protocol allows. */
export const MAX_STRING_LENGTH = 4096;
/** Largest READ/WRITE payload we accept, as qemu-nbd (NBD_MAX_BUFFER_SIZE). */
export const MAX_PAYLOAD = 32 * 1024 * 1024;
/** Largest option payload we read into memory; longer options are skipped and refused. */
export const MAX_OPTION_LENGTH = 64 * 1024;
/** Longer options than this are not even skipped: the connection is dropped. */
export const MAX_SKIPPABLE_OPTION_LENGTH = MAX_PAYLOAD;

export const GREETING_LENGTH = 18;
export const OPTION_HEADER_LENGTH = 16;
export const REQUEST_HEADER_LENGTH = 28;
export const EXTENDED_REQUEST_HEADER_LENGTH = 32;
export const EXTENDED_REPLY_HEADER_LENGTH = 32;
