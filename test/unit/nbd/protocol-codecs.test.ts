import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { VdiskError } from '../../../src/errors.js';
import {
  Cmd,
  CmdFlag,
  Info,
  MAX_PAYLOAD,
  NbdErrno,
  Rep,
  ReplyType,
  TransmissionFlag,
  decodeClientFlags,
  decodeOptionHeader,
  decodeOptionReplyHeader,
  decodeReplyHeader,
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeExportRequest,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeMetaContextRequest,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOffsetHoleChunk,
  encodeOptionError,
  encodeOptionHeader,
  encodeRequestHeader,
  encodeServerReply,
  encodeSimpleReply,
  nbdErrnoOf,
  parseExportRequest,
  parseMetaContextRequest,
  validateRequest,
  type RequestContext,
} from '../../../src/nbd/protocol/index.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('greeting is NBDMAGIC, IHAVEOPT and fixed-newstyle|no-zeroes', () => {
  assert.equal(hex(encodeGreeting()), '4e42444d41474943' + '49484156454f5054' + '0003');
});

test('client flags: known flags decode, unknown or unoffered flags are refused', () => {
  assert.deepEqual(decodeClientFlags(Uint8Array.of(0, 0, 0, 3)), { fixedNewstyle: true, noZeroes: true });
  assert.deepEqual(decodeClientFlags(Uint8Array.of(0, 0, 0, 0)), { fixedNewstyle: false, noZeroes: false });
  assert.throws(() => decodeClientFlags(Uint8Array.of(0, 0, 0, 4)), VdiskError);
  assert.throws(() => decodeClientFlags(Uint8Array.of(0x80, 0, 0, 0)), VdiskError);
  assert.throws(() => decodeClientFlags(Uint8Array.of(0, 0, 0, 2), 1), /unsupported client flags/);
  assert.throws(() => decodeClientFlags(Uint8Array.of(0, 0, 3)), /4 bytes/);
});

test('option header round-trips and a bad magic is a protocol error', () => {
  const h = encodeOptionHeader(7, Uint8Array.of(1, 2, 3));
  assert.deepEqual(decodeOptionHeader(h.subarray(0, 16)), { option: 7, length: 3 });
  const bad = Uint8Array.from(h.subarray(0, 16));
  bad[0] = 0;
  assert.throws(() => decodeOptionHeader(bad), /bad option magic/);
  assert.throws(() => decodeOptionHeader(new Uint8Array(15)), /16 bytes/);
});

test('INFO/GO data parses name and info requests', () => {
  const r = parseExportRequest(encodeExportRequest('disk', [Info.NAME, Info.BLOCK_SIZE]));
  assert.deepEqual(r, { ok: true, name: 'disk', infos: [Info.NAME, Info.BLOCK_SIZE] });
  assert.deepEqual(parseExportRequest(encodeExportRequest('')), { ok: true, name: '', infos: [] });
});

test('INFO/GO data with inconsistent lengths is ERR_INVALID, not a crash', () => {
  assert.equal(parseExportRequest(new Uint8Array(5)).ok, false);
  const tooLongName = encodeExportRequest('abc');
  new DataView(tooLongName.buffer).setUint32(0, 1000);
  const r1 = parseExportRequest(tooLongName);
  assert.ok(!r1.ok && r1.reply === Rep.ERR_INVALID);
  const extra = new Uint8Array([...encodeExportRequest('a', [1]), 9]);
  assert.equal(parseExportRequest(extra).ok, false);
  const countTooBig = encodeExportRequest('a', [1]);
  new DataView(countTooBig.buffer).setUint16(5, 2);
  assert.equal(parseExportRequest(countTooBig).ok, false);
  const nul = encodeExportRequest('a\0b');
  assert.match(String((parseExportRequest(nul) as { message: string }).message), /NUL/);
  const badUtf8 = encodeExportRequest('ab');
  badUtf8[4] = 0xff;
  assert.equal(parseExportRequest(badUtf8).ok, false);
});

test('export names longer than 4096 bytes are ERR_TOO_BIG', () => {
  const r = parseExportRequest(encodeExportRequest('x'.repeat(4097)));
  assert.ok(!r.ok && r.reply === Rep.ERR_TOO_BIG);
  assert.equal(parseExportRequest(encodeExportRequest('x'.repeat(4096))).ok, true);
});

test('meta context data parses export name and queries', () => {
  const r = parseMetaContextRequest(encodeMetaContextRequest('e', ['base:allocation', 'qemu:']));
  assert.deepEqual(r, { ok: true, exportName: 'e', queries: ['base:allocation', 'qemu:'] });
  assert.deepEqual(parseMetaContextRequest(encodeMetaContextRequest('', [])), { ok: true, exportName: '', queries: [] });
});

test('meta context data: huge query count, overrun, trailing bytes are ERR_INVALID', () => {
  const huge = encodeMetaContextRequest('', []);
  new DataView(huge.buffer).setUint32(4, 0xffffffff);
  const r = parseMetaContextRequest(huge);
  assert.ok(!r.ok && /query count/.test(r.message));
  const overrun = encodeMetaContextRequest('', ['abc']);
  new DataView(overrun.buffer).setUint32(8, 100);
  assert.equal(parseMetaContextRequest(overrun).ok, false);
  assert.equal(parseMetaContextRequest(new Uint8Array([...encodeMetaContextRequest('', ['a']), 0])).ok, false);
  assert.equal(parseMetaContextRequest(new Uint8Array(7)).ok, false);
});

test('option parsers never throw on arbitrary bytes', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      parseExportRequest(bytes);
      parseMetaContextRequest(bytes);
    }),
    { numRuns: 2000 },
  );
});

test('option replies carry magic, option, type, length', () => {
  const r = encodeOptionError(7, Rep.ERR_UNKNOWN, 'nope');
  assert.deepEqual(decodeOptionReplyHeader(r.subarray(0, 20)), { option: 7, replyType: Rep.ERR_UNKNOWN, length: 4 });
  assert.equal(Buffer.from(r.subarray(20)).toString(), 'nope');
  const long = encodeOptionError(1, Rep.ERR_INVALID, 'y'.repeat(5000));
  assert.equal(long.byteLength, 20 + 4096);
  const s = encodeServerReply(3, 'name', 'desc');
  assert.equal(hex(s.subarray(20)), '00000004' + Buffer.from('namedesc').toString('hex'));
});

test('INFO_EXPORT and INFO_BLOCK_SIZE have the lengths proto.md gives', () => {
  const e = encodeInfoExport(7, 1 << 20, 0x1234);
  assert.equal(decodeOptionReplyHeader(e.subarray(0, 20)).length, 12);
  assert.equal(hex(e.subarray(20)), '0000' + '0000000000100000' + '1234');
  const b = encodeInfoBlockSize(7, { minimum: 1, preferred: 4096, maximum: MAX_PAYLOAD });
  assert.equal(decodeOptionReplyHeader(b.subarray(0, 20)).length, 14);
  assert.equal(hex(b.subarray(20)), '0003' + '00000001' + '00001000' + '02000000');
});

test('EXPORT_NAME reply is 134 bytes, or 10 with NO_ZEROES', () => {
  assert.equal(encodeExportNameReply(512, 1, false).byteLength, 134);
  assert.equal(hex(encodeExportNameReply(512, 1, true)), '0000000000000200' + '0001');
});

test('request header round-trips; bad magic and wrong size are protocol errors', () => {
  const req = { flags: CmdFlag.FUA, type: Cmd.WRITE, cookie: 0xdeadbeefcafef00dn, offset: 1n << 40n, length: 4096 };
  const buf = encodeRequestHeader(req);
  assert.equal(hex(buf.subarray(0, 4)), '25609513');
  assert.deepEqual(decodeRequestHeader(buf), req);
  const bad = Uint8Array.from(buf);
  bad[3] = 0x14;
  assert.throws(() => decodeRequestHeader(bad), /bad request magic 0x25609514/);
  assert.throws(() => decodeRequestHeader(buf.subarray(0, 27)), /28 bytes/);
});

const rw: RequestContext = {
  exportSize: 1 << 20,
  transmissionFlags:
    TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA | TransmissionFlag.SEND_TRIM |
    TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO | TransmissionFlag.SEND_DF,
  structuredReplies: true,
  metaContexts: 1,
};
const ro: RequestContext = { ...rw, transmissionFlags: TransmissionFlag.HAS_FLAGS | TransmissionFlag.READ_ONLY | TransmissionFlag.SEND_FLUSH, metaContexts: 0 };
const req = (type: number, offset: number, length: number, flags = 0) => ({ type, flags, cookie: 1n, offset: BigInt(offset), length });
const errnoOf = (r: ReturnType<typeof validateRequest>): number => (r.ok ? 0 : r.errno);

test('requests inside the export pass with a numeric offset', () => {
  const r = validateRequest(req(Cmd.READ, 4096, 4096, CmdFlag.DF | CmdFlag.FUA), rw);
  assert.deepEqual(r, { ok: true, type: Cmd.READ, flags: CmdFlag.DF | CmdFlag.FUA, cookie: 1n, offset: 4096, length: 4096 });
  assert.equal(errnoOf(validateRequest(req(Cmd.WRITE, (1 << 20) - 1, 1), rw)), 0);
  assert.equal(errnoOf(validateRequest(req(Cmd.FLUSH, 0, 0), rw)), 0);
});

test('out-of-range: EINVAL for read/trim/status, ENOSPC for write/write-zeroes', () => {
  assert.equal(errnoOf(validateRequest(req(Cmd.READ, 1 << 20, 1), rw)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.TRIM, 0, (1 << 20) + 1), rw)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.BLOCK_STATUS, 1 << 20, 1), rw)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.WRITE, 1 << 20, 1), rw)), NbdErrno.ENOSPC);
  assert.equal(errnoOf(validateRequest(req(Cmd.WRITE_ZEROES, 1 << 19, 1 << 20), rw)), NbdErrno.ENOSPC);
  const huge = { ...req(Cmd.READ, 0, 1), offset: 0xffffffffffffffffn };
  assert.equal(errnoOf(validateRequest(huge, rw)), NbdErrno.EINVAL);
});

test('writes to a read-only export are EPERM', () => {
  for (const t of [Cmd.WRITE, Cmd.TRIM, Cmd.WRITE_ZEROES]) assert.equal(errnoOf(validateRequest(req(t, 0, 1), ro)), NbdErrno.EPERM);
  assert.equal(errnoOf(validateRequest(req(Cmd.READ, 0, 1), ro)), 0);
});

test('unknown commands, unadvertised or misplaced flags are EINVAL', () => {
  assert.equal(errnoOf(validateRequest(req(99, 0, 1), rw)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.READ, 0, 1, CmdFlag.NO_HOLE), rw)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.READ, 0, 1, CmdFlag.DF), ro)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.WRITE_ZEROES, 0, 1, CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO), rw)), 0);
  assert.equal(errnoOf(validateRequest(req(Cmd.WRITE, 0, 1, CmdFlag.FAST_ZERO), rw)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.BLOCK_STATUS, 0, 1, CmdFlag.REQ_ONE), rw)), 0);
  assert.equal(errnoOf(validateRequest(req(Cmd.BLOCK_STATUS, 0, 1), ro)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.READ, 0, 1, 0x8000), rw)), NbdErrno.EINVAL);
});

test('READ and WRITE beyond 32 MiB are refused', () => {
  const big = { ...rw, exportSize: 1 << 30 };
  assert.equal(errnoOf(validateRequest(req(Cmd.READ, 0, MAX_PAYLOAD + 1), big)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.WRITE, 0, MAX_PAYLOAD + 1), big)), NbdErrno.EINVAL);
  assert.equal(errnoOf(validateRequest(req(Cmd.READ, 0, MAX_PAYLOAD), big)), 0);
  // Payload-free commands may be larger.
  assert.equal(errnoOf(validateRequest(req(Cmd.WRITE_ZEROES, 0, MAX_PAYLOAD * 4), big)), 0);
});

test('validateRequest never throws on arbitrary headers', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 28, maxLength: 28 }), (bytes) => {
      bytes.set([0x25, 0x60, 0x95, 0x13], 0);
      validateRequest(decodeRequestHeader(bytes), rw);
    }),
    { numRuns: 2000 },
  );
});

test('simple and structured reply headers decode back', () => {
  assert.deepEqual(decodeReplyHeader(encodeSimpleReply(5n, NbdErrno.EIO)), { kind: 'simple', error: 5, cookie: 5n });
  const none = decodeReplyHeader(encodeNoneChunk(9n));
  assert.deepEqual(none, { kind: 'structured', flags: 1, type: ReplyType.NONE, cookie: 9n, length: 0 });
  const data = encodeOffsetDataHeader(9n, { offset: 4096, dataLength: 100, done: false });
  assert.deepEqual(decodeReplyHeader(data.subarray(0, 20)), { kind: 'structured', flags: 0, type: ReplyType.OFFSET_DATA, cookie: 9n, length: 108 });
  const hole = encodeOffsetHoleChunk(9n, { offset: 0, holeLength: 512, done: true });
  assert.equal(hole.byteLength, 32);
  assert.equal(hex(hole.subarray(16)), '0000000c' + '0000000000000000' + '00000200');
  assert.throws(() => encodeOffsetHoleChunk(9n, { offset: 0, holeLength: 0, done: true }));
  assert.throws(() => decodeReplyHeader(Uint8Array.of(1, 2, 3, 4)), /bad reply magic/);
});

test('error and block status chunks follow the payload layouts', () => {
  const e = encodeErrorChunk(1n, NbdErrno.EIO, 'bad');
  assert.equal(hex(e.subarray(4, 8)), '0001' + '8001');
  assert.equal(hex(e.subarray(16)), '00000009' + '00000005' + '0003' + Buffer.from('bad').toString('hex'));
  const s = encodeBlockStatusChunk(1n, { contextId: 7, extents: [{ length: 4096, flags: 3 }, { length: 512, flags: 0 }], done: true });
  assert.equal(hex(s.subarray(6, 8)), '0005');
  assert.equal(hex(s.subarray(16)), '00000014' + '00000007' + '00001000' + '00000003' + '00000200' + '00000000');
  assert.throws(() => encodeBlockStatusChunk(1n, { contextId: 0, extents: [], done: true }));
});

test('VdiskError codes map to NBD errnos', () => {
  assert.equal(nbdErrnoOf(new VdiskError('EPERM', 'x')), NbdErrno.EPERM);
  assert.equal(nbdErrnoOf(new VdiskError('ENOSPC', 'x')), NbdErrno.ENOSPC);
  assert.equal(nbdErrnoOf(new VdiskError('EFBIG', 'x')), NbdErrno.ENOSPC);
  assert.equal(nbdErrnoOf(new VdiskError('ENOTSUP', 'x')), NbdErrno.ENOTSUP);
  assert.equal(nbdErrnoOf(new VdiskError('ERANGE', 'x')), NbdErrno.EINVAL);
  assert.equal(nbdErrnoOf(new VdiskError('ECORRUPT', 'x')), NbdErrno.EIO);
  assert.equal(nbdErrnoOf(new Error('boom')), NbdErrno.EIO);
  assert.equal(nbdErrnoOf('string'), NbdErrno.EIO);
});
