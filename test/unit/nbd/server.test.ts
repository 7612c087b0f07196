import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { NbdServer } from '../../../src/nbd/server/index.js';
import {
  ClientFlag,
  Cmd,
  CmdFlag,
  Info,
  NbdErrno,
  Opt,
  Rep,
  ReplyType,
  StateFlag,
  TransmissionFlag,
  encodeExportRequest,
  encodeMetaContextRequest,
  encodeOptionHeader,
} from '../../../src/nbd/protocol/index.js';
import { MemoryNode } from './support/memory-node.js';
import { TestClient } from './support/test-client.js';

const MiB = 1024 * 1024;

async function withServer(
  node: MemoryNode,
  fn: (ctx: { server: NbdServer; connect: () => Promise<TestClient> }) => Promise<void>,
  options: { readOnly?: boolean; description?: string; name?: string } = {},
): Promise<void> {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  const socketPath = `${dir}/nbd.sock`;
  const server = new NbdServer();
  server.addExport({ name: options.name ?? '', node, readOnly: options.readOnly ?? false, description: options.description ?? '' });
  await server.listen({ socketPath });
  const clients: TestClient[] = [];
  try {
    await fn({
      server,
      connect: async () => {
        const c = await TestClient.connect(socketPath);
        clients.push(c);
        return c;
      },
    });
  } finally {
    for (const c of clients) c.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const pattern = (n: number, seed: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff);

test('handshake: LIST, INFO with name and description, unknown options and exports', async () => {
  await withServer(
    new MemoryNode(MiB),
    async ({ connect }) => {
      const c = await connect();
      const greeting = await c.readGreeting();
      assert.equal(greeting.readUInt16BE(16), 3);
      c.write(Uint8Array.of(0, 0, 0, ClientFlag.FIXED_NEWSTYLE));
      const list = await c.option(Opt.LIST);
      assert.equal(list[0]?.replyType, Rep.SERVER);
      assert.equal(list[0]?.data.subarray(4, 8).toString(), 'disk');
      assert.equal(list[0]?.data.subarray(8).toString(), 'my disk');
      assert.equal(list[1]?.replyType, Rep.ACK);
      assert.equal((await c.option(Opt.LIST, Uint8Array.of(1)))[0]?.replyType, Rep.ERR_INVALID);

      const info = await c.option(Opt.INFO, encodeExportRequest('disk', [Info.NAME, Info.DESCRIPTION, Info.BLOCK_SIZE]));
      const byType = new Map(info.filter((r) => r.replyType === Rep.INFO).map((r) => [r.data.readUInt16BE(0), r.data.subarray(2)]));
      assert.equal(byType.get(Info.NAME)?.toString(), 'disk');
      assert.equal(byType.get(Info.DESCRIPTION)?.toString(), 'my disk');
      const bs = byType.get(Info.BLOCK_SIZE);
      assert.deepEqual([bs?.readUInt32BE(0), bs?.readUInt32BE(4), bs?.readUInt32BE(8)], [1, 4096, 32 * MiB]);
      const exp = byType.get(Info.EXPORT);
      assert.equal(exp?.readBigUInt64BE(0), BigInt(MiB));
      const flags = exp?.readUInt16BE(8) ?? 0;
      assert.ok(flags & TransmissionFlag.HAS_FLAGS && flags & TransmissionFlag.SEND_FLUSH && flags & TransmissionFlag.SEND_WRITE_ZEROES);
      assert.equal(flags & TransmissionFlag.SEND_DF, 0, 'DF only after structured replies');
      assert.equal(info[info.length - 1]?.replyType, Rep.ACK);

      assert.equal((await c.option(Opt.INFO, encodeExportRequest('nope')))[0]?.replyType, Rep.ERR_UNKNOWN);
      assert.equal((await c.option(Opt.INFO, Uint8Array.of(0, 0, 0, 9, 0, 0)))[0]?.replyType, Rep.ERR_INVALID);
      assert.equal((await c.option(42))[0]?.replyType, Rep.ERR_UNSUP);
      assert.equal((await c.option(Opt.STARTTLS))[0]?.replyType, Rep.ERR_POLICY);
      assert.equal((await c.option(Opt.EXTENDED_HEADERS, Uint8Array.of(1)))[0]?.replyType, Rep.ERR_INVALID, 'EXTENDED_HEADERS takes no data');
      assert.equal((await c.option(Opt.EXTENDED_HEADERS))[0]?.replyType, Rep.ACK);
      assert.equal((await c.option(Opt.EXTENDED_HEADERS))[0]?.replyType, Rep.ERR_INVALID, 'a second EXTENDED_HEADERS');
      assert.equal((await c.option(Opt.STRUCTURED_REPLY))[0]?.replyType, Rep.ERR_EXT_HEADER_REQD);
      assert.equal((await c.option(Opt.ABORT))[0]?.replyType, Rep.ACK);
      await c.closed();
    },
    { name: 'disk', description: 'my disk' },
  );
});

test('handshake: the empty name reaches the first export; oversized options are refused without reading them into memory', async () => {
  await withServer(
    new MemoryNode(MiB),
    async ({ connect }) => {
      const c = await connect();
      await c.readGreeting();
      c.write(Uint8Array.of(0, 0, 0, 1));
      assert.equal((await c.option(Opt.INFO, encodeExportRequest('')))[0]?.replyType, Rep.INFO);
      const big = new Uint8Array(200 * 1024);
      assert.equal((await c.option(Opt.INFO, big))[0]?.replyType, Rep.ERR_TOO_BIG);
      assert.equal((await c.option(Opt.LIST))[1]?.replyType, Rep.ACK, 'still in sync after skipping');
    },
    { name: 'named' },
  );
});

test('handshake: meta contexts need structured replies; LIST and SET select base:allocation and qemu:allocation-depth', async () => {
  await withServer(new MemoryNode(MiB), async ({ connect }) => {
    const c = await connect();
    await c.readGreeting();
    c.write(Uint8Array.of(0, 0, 0, 1));
    assert.equal((await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['base:allocation'])))[0]?.replyType, Rep.ERR_INVALID);
    assert.equal((await c.option(Opt.STRUCTURED_REPLY))[0]?.replyType, Rep.ACK);
    assert.equal((await c.option(Opt.STRUCTURED_REPLY))[0]?.replyType, Rep.ERR_INVALID);
    const names = (rs: Awaited<ReturnType<TestClient['option']>>): string[] =>
      rs.filter((r) => r.replyType === Rep.META_CONTEXT).map((r) => r.data.subarray(4).toString());
    assert.deepEqual(names(await c.option(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('', []))), ['base:allocation', 'qemu:allocation-depth']);
    assert.deepEqual(names(await c.option(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('', ['qemu:']))), ['qemu:allocation-depth']);
    assert.deepEqual(names(await c.option(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('', ['base:', 'x-y:z']))), ['base:allocation']);
    assert.deepEqual(names(await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['base:', 'base:allocation']))), ['base:allocation']);
    assert.equal((await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('zz', ['base:allocation'])))[0]?.replyType, Rep.ERR_UNKNOWN);
  });
});

test('handshake: bad client flags or option magic drop the connection', async () => {
  await withServer(new MemoryNode(MiB), async ({ connect }) => {
    const a = await connect();
    await a.readGreeting();
    a.write(Uint8Array.of(0, 0, 0, 0x10));
    await a.closed();
    const b = await connect();
    await b.readGreeting();
    b.write(Uint8Array.of(0, 0, 0, 1));
    const bad = encodeOptionHeader(Opt.LIST);
    bad[0] = 0;
    b.write(bad);
    await b.closed();
  });
});

test('EXPORT_NAME enters transmission with a 10-byte reply under NO_ZEROES; an unknown name closes', async () => {
  await withServer(new MemoryNode(MiB), async ({ connect }) => {
    const c = await connect();
    await c.readGreeting();
    c.write(Uint8Array.of(0, 0, 0, 3));
    c.write(encodeOptionHeader(Opt.EXPORT_NAME, new Uint8Array(0)));
    const reply = await c.reader.read(10);
    assert.equal(reply.readBigUInt64BE(0), BigInt(MiB));
    c.request({ type: Cmd.READ, flags: 0, cookie: 1n, offset: 0n, length: 512 });
    const r = await c.readReply();
    assert.deepEqual(r, { kind: 'simple', error: 0, cookie: 1n });
    assert.equal((await c.reader.read(512)).byteLength, 512);

    const d = await connect();
    await d.readGreeting();
    d.write(Uint8Array.of(0, 0, 0, 3));
    d.write(encodeOptionHeader(Opt.EXPORT_NAME, Buffer.from('missing')));
    await d.closed();
  }, { name: 'x' });
});

test('simple replies: write then read back; errors as simple replies', async () => {
  const node = new MemoryNode(MiB);
  await withServer(node, async ({ connect }) => {
    const c = await connect();
    await c.handshake();
    const data = pattern(8192, 3);
    c.request({ type: Cmd.WRITE, flags: CmdFlag.FUA, cookie: 7n, offset: 4096n, length: data.byteLength }, data);
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: 0, cookie: 7n });
    assert.equal(node.fuaWrites, 1);
    c.request({ type: Cmd.READ, flags: 0, cookie: 8n, offset: 4096n, length: 8192 });
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: 0, cookie: 8n });
    assert.deepEqual(new Uint8Array(await c.reader.read(8192)), data);
    c.request({ type: Cmd.READ, flags: 0, cookie: 9n, offset: BigInt(MiB), length: 1 });
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: NbdErrno.EINVAL, cookie: 9n });
    c.request({ type: Cmd.WRITE, flags: 0, cookie: 10n, offset: BigInt(MiB - 1), length: 2 }, Uint8Array.of(1, 2));
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: NbdErrno.ENOSPC, cookie: 10n });
    c.request({ type: Cmd.FLUSH, flags: 0, cookie: 11n, offset: 0n, length: 0 });
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: 0, cookie: 11n });
    assert.equal(node.flushes, 1);
    node.failAt = 0;
    c.request({ type: Cmd.READ, flags: 0, cookie: 12n, offset: 0n, length: 512 });
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: NbdErrno.EIO, cookie: 12n });
    node.failAt = null;
    c.request({ type: Cmd.READ, flags: 0, cookie: 13n, offset: 0n, length: 1 });
    assert.equal((await c.readReply()).cookie, 13n, 'the stream is still in sync after an error');
    await c.reader.read(1);
  });
});

test('structured READ sends holes as OFFSET_HOLE and data as OFFSET_DATA; DF gives one chunk', async () => {
  const node = new MemoryNode(MiB);
  await node.write(65536, pattern(4096, 1));
  await withServer(node, async ({ connect }) => {
    const c = await connect();
    const { flags } = await c.handshake({ structured: true });
    assert.ok(flags & TransmissionFlag.SEND_DF);
    c.request({ type: Cmd.READ, flags: 0, cookie: 1n, offset: 0n, length: 131072 });
    const chunks = await c.readChunks();
    const kinds = chunks.map((ch) => [ch.type, Number(ch.payload.readBigUInt64BE(0))]);
    assert.deepEqual(kinds, [[ReplyType.OFFSET_HOLE, 0], [ReplyType.OFFSET_DATA, 65536], [ReplyType.OFFSET_HOLE, 69632]]);
    assert.equal(chunks[0]?.payload.readUInt32BE(8), 65536);
    assert.deepEqual(new Uint8Array(chunks[1]?.payload.subarray(8) ?? []), pattern(4096, 1));
    assert.equal(chunks[2]?.flags, 1);

    c.request({ type: Cmd.READ, flags: CmdFlag.DF, cookie: 2n, offset: 0n, length: 131072 });
    const df = await c.readChunks();
    assert.equal(df.length, 1);
    assert.equal(df[0]?.type, ReplyType.OFFSET_DATA);
    assert.equal(df[0]?.payload.byteLength, 8 + 131072);

    node.failAt = 65536;
    c.request({ type: Cmd.READ, flags: 0, cookie: 3n, offset: 0n, length: 131072 });
    const err = await c.readChunks();
    assert.equal(err.length, 1);
    assert.equal(err[0]?.type, ReplyType.ERROR);
    assert.equal(err[0]?.payload.readUInt32BE(0), NbdErrno.EIO);
    node.failAt = null;

    c.request({ type: Cmd.READ, flags: 0, cookie: 4n, offset: BigInt(MiB), length: 1 });
    const oob = await c.readChunks();
    assert.equal(oob[0]?.type, ReplyType.ERROR);
    assert.equal(oob[0]?.payload.readUInt32BE(0), NbdErrno.EINVAL);
  });
});

test('BLOCK_STATUS reports base:allocation and qemu:allocation-depth, REQ_ONE gives one extent', async () => {
  const node = new MemoryNode(MiB);
  await node.write(8192, pattern(4096, 2));
  await withServer(node, async ({ connect }) => {
    const c = await connect();
    await c.handshake({ structured: true, contexts: ['base:allocation', 'qemu:allocation-depth'] });
    c.request({ type: Cmd.BLOCK_STATUS, flags: 0, cookie: 1n, offset: 0n, length: 65536 });
    const chunks = await c.readChunks();
    assert.equal(chunks.length, 2);
    const decode = (p: Buffer): Array<[number, number]> => {
      const out: Array<[number, number]> = [];
      for (let i = 4; i < p.byteLength; i += 8) out.push([p.readUInt32BE(i), p.readUInt32BE(i + 4)]);
      return out;
    };
    const byId = new Map(chunks.map((ch) => [ch.payload.readUInt32BE(0), decode(ch.payload)]));
    const hz = StateFlag.HOLE | StateFlag.ZERO;
    assert.deepEqual(byId.get(0), [[8192, hz], [4096, 0], [65536 - 12288, hz]]);
    assert.deepEqual(byId.get(1), [[8192, 0], [4096, 1], [65536 - 12288, 0]]);

    c.request({ type: Cmd.BLOCK_STATUS, flags: CmdFlag.REQ_ONE, cookie: 2n, offset: 0n, length: 65536 });
    const one = await c.readChunks();
    for (const ch of one) assert.equal(ch.payload.byteLength, 12);

    c.request({ type: Cmd.BLOCK_STATUS, flags: 0, cookie: 3n, offset: BigInt(MiB - 512), length: 1024 });
    assert.equal((await c.readChunks())[0]?.type, ReplyType.ERROR);
  });
});

test('BLOCK_STATUS without a selected context is EINVAL', async () => {
  await withServer(new MemoryNode(MiB), async ({ connect }) => {
    const c = await connect();
    await c.handshake({ structured: true });
    c.request({ type: Cmd.BLOCK_STATUS, flags: 0, cookie: 1n, offset: 0n, length: 4096 });
    const r = await c.readChunks();
    assert.equal(r[0]?.payload.readUInt32BE(0), NbdErrno.EINVAL);
  });
});

test('WRITE_ZEROES honours NO_HOLE and FAST_ZERO; TRIM discards; CACHE succeeds', async () => {
  const node = new MemoryNode(MiB);
  await node.write(0, pattern(65536, 5));
  await withServer(node, async ({ connect }) => {
    const c = await connect();
    const { flags } = await c.handshake();
    assert.ok(flags & TransmissionFlag.SEND_FAST_ZERO && flags & TransmissionFlag.SEND_TRIM);
    c.request({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.NO_HOLE | CmdFlag.FAST_ZERO, cookie: 1n, offset: 0n, length: 4096 });
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: NbdErrno.ENOTSUP, cookie: 1n });
    c.request({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.NO_HOLE, cookie: 2n, offset: 0n, length: 4096 });
    assert.equal((await c.readReply()).kind, 'simple');
    assert.equal(node.allocated[0], true, 'NO_HOLE keeps the range allocated');
    c.request({ type: Cmd.WRITE_ZEROES, flags: 0, cookie: 3n, offset: 4096n, length: 4096 });
    await c.readReply();
    assert.equal(node.allocated[1], false, 'without NO_HOLE the range may be unmapped');
    c.request({ type: Cmd.TRIM, flags: CmdFlag.FUA, cookie: 4n, offset: 8192n, length: 8192 });
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: 0, cookie: 4n });
    assert.equal(node.discards, 1);
    assert.equal(node.flushes, 1, 'TRIM with FUA flushes');
    c.request({ type: Cmd.CACHE, flags: 0, cookie: 5n, offset: 0n, length: 4096 });
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: 0, cookie: 5n });
    assert.deepEqual(node.bytes.subarray(0, 16384), new Uint8Array(16384));
  });
});

test('a read-only export advertises READ_ONLY and refuses writes with EPERM', async () => {
  const node = new MemoryNode(MiB);
  await withServer(
    node,
    async ({ connect }) => {
      const c = await connect();
      const { flags } = await c.handshake();
      assert.ok(flags & TransmissionFlag.READ_ONLY);
      assert.equal(flags & (TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES), 0);
      c.request({ type: Cmd.WRITE, flags: 0, cookie: 1n, offset: 0n, length: 4 }, Uint8Array.of(1, 2, 3, 4));
      assert.deepEqual(await c.readReply(), { kind: 'simple', error: NbdErrno.EPERM, cookie: 1n });
      assert.equal(node.bytes[0], 0);
    },
    { readOnly: true },
  );
});

test('pipelined requests run concurrently and are all answered, possibly out of order', async () => {
  const node = new MemoryNode(4 * MiB);
  node.delayMs = 20;
  await withServer(node, async ({ connect }) => {
    const c = await connect();
    await c.handshake();
    const n = 32;
    const started = Date.now();
    for (let i = 0; i < n; i++) {
      const d = pattern(4096, i);
      c.request({ type: Cmd.WRITE, flags: 0, cookie: BigInt(i), offset: BigInt(i * 4096), length: 4096 }, d);
    }
    const cookies = new Set<bigint>();
    for (let i = 0; i < n; i++) {
      const r = await c.readReply();
      assert.equal(r.kind === 'simple' ? r.error : -1, 0);
      cookies.add(r.cookie);
    }
    assert.equal(cookies.size, n);
    assert.ok(Date.now() - started < n * 20, 'requests overlapped');
    for (let i = 0; i < n; i++) assert.deepEqual(node.bytes.subarray(i * 4096, (i + 1) * 4096), pattern(4096, i));
  });
});

test('a bad request magic drops the connection; DISC answers in-flight requests before closing', async () => {
  const node = new MemoryNode(MiB);
  await withServer(node, async ({ connect }) => {
    const a = await connect();
    await a.handshake();
    a.write(new Uint8Array(28));
    await a.closed();

    node.delayMs = 30;
    const b = await connect();
    await b.handshake();
    b.request({ type: Cmd.WRITE, flags: 0, cookie: 1n, offset: 0n, length: 4 }, Uint8Array.of(9, 9, 9, 9));
    b.request({ type: Cmd.DISC, flags: 0, cookie: 2n, offset: 0n, length: 0 });
    assert.deepEqual(await b.readReply(), { kind: 'simple', error: 0, cookie: 1n });
    await b.closed();
    assert.equal(node.bytes[0], 9);
  });
});

test('server close waits for accepted requests, then closes clients', async () => {
  const node = new MemoryNode(MiB);
  node.delayMs = 50;
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const server = new NbdServer();
    server.addExport({ name: '', node });
    await server.listen({ socketPath: `${dir}/s` });
    const c = await TestClient.connect(`${dir}/s`);
    await c.handshake();
    c.request({ type: Cmd.WRITE, flags: 0, cookie: 1n, offset: 0n, length: 2 }, Uint8Array.of(5, 6));
    await new Promise((r) => setTimeout(r, 10));
    const replyP = c.readReply();
    await server.close();
    assert.deepEqual(await replyP, { kind: 'simple', error: 0, cookie: 1n });
    await c.closed();
    assert.equal(node.bytes[1], 6);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('maxClients makes further clients wait until a slot frees', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const server = new NbdServer({ maxClients: 1 });
    server.addExport({ name: '', node: new MemoryNode(MiB) });
    await server.listen({ socketPath: `${dir}/s` });
    const a = await TestClient.connect(`${dir}/s`);
    await a.readGreeting();
    const b = await TestClient.connect(`${dir}/s`);
    let bGreeted = false;
    const bg = b.readGreeting().then(() => {
      bGreeted = true;
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(bGreeted, false);
    a.close();
    await bg;
    assert.equal(bGreeted, true);
    b.close();
    await server.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('READ buffers are reused between replies without ever sending an earlier reply\'s bytes', async () => {
  const node = new MemoryNode(MiB);
  await node.write(65536, pattern(4096, 1));
  await node.write(262144, new Uint8Array(131072).fill(0xaa));
  await withServer(node, async ({ connect }) => {
    const c = await connect();
    await c.handshake({ structured: true });
    for (let round = 0; round < 3; round++) {
      // A full-data reply fills a 128 KiB buffer with 0xaa, then goes back to the pool...
      c.request({ type: Cmd.READ, flags: 0, cookie: 1n, offset: 262144n, length: 131072 });
      const full = await c.readChunks();
      assert.deepEqual(new Uint8Array(full[0]?.payload.subarray(8) ?? []), new Uint8Array(131072).fill(0xaa));
      // ...and the next replies of that size get it: holes are not sent, DF sends every byte read.
      c.request({ type: Cmd.READ, flags: 0, cookie: 2n, offset: 0n, length: 131072 });
      const sparse = await c.readChunks();
      assert.deepEqual(sparse.map((ch) => ch.type), [ReplyType.OFFSET_HOLE, ReplyType.OFFSET_DATA, ReplyType.OFFSET_HOLE]);
      assert.deepEqual(new Uint8Array(sparse[1]?.payload.subarray(8) ?? []), pattern(4096, 1));
      c.request({ type: Cmd.READ, flags: CmdFlag.DF, cookie: 3n, offset: 0n, length: 131072 });
      const whole = await c.readChunks();
      const expected = new Uint8Array(131072);
      expected.set(pattern(4096, 1), 65536);
      assert.deepEqual(new Uint8Array(whole[0]?.payload.subarray(8) ?? []), expected);
    }
  });
});
