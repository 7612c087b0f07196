import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { DirtyBitmap } from '../../../src/block/dirty-bitmap.js';
import { NbdClient } from '../../../src/nbd/client/index.js';
import { NbdServer, bitmapExtents } from '../../../src/nbd/server/index.js';
import {
  ClientFlag,
  Cmd,
  CmdFlag,
  DIRTY_STATE,
  EXTENDED_REPLY_MAGIC,
  Info,
  NbdErrno,
  Opt,
  Rep,
  ReplyType,
  encodeExportRequest,
  encodeExtendedRequestHeader,
  encodeMetaContextRequest,
  encodeOptionHeader,
  encodeRequestHeader,
} from '../../../src/nbd/protocol/index.js';
import { MemoryNode } from './support/memory-node.js';
import { TestClient } from './support/test-client.js';

const MiB = 1024 * 1024;

async function withServer(node: MemoryNode, bitmap: DirtyBitmap | null, fn: (socketPath: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  const socketPath = `${dir}/nbd.sock`;
  const server = new NbdServer();
  server.addExport({ name: '', node, ...(bitmap ? { bitmaps: [{ name: 'b0', bitmap }] } : {}) });
  await server.listen({ socketPath });
  try {
    await fn(socketPath);
  } finally {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('our client negotiates extended headers: writes, reads, zeroes and block status round-trip', async () => {
  const node = new MemoryNode(8 * MiB);
  await withServer(node, null, async (socketPath) => {
    const c = await NbdClient.connect({ address: { socketPath }, exportName: '', extendedHeaders: true });
    try {
      assert.equal(c.extendedHeaders, true);
      assert.equal(c.structuredReplies, true);
      await c.write(MiB, new Uint8Array(128 * 1024).fill(0x5a), true);
      const back = new Uint8Array(256 * 1024);
      await c.read(MiB - 64 * 1024, back);
      assert.equal(back[0], 0);
      assert.equal(back[64 * 1024], 0x5a);
      assert.equal(back[192 * 1024 - 1], 0x5a);
      await c.writeZeroes(MiB, 4096, 0);
      await c.read(MiB, back.subarray(0, 4096));
      assert.ok(back.subarray(0, 4096).every((b) => b === 0));
      await c.flush();
      const ext = await c.blockStatus(0, 8 * MiB);
      assert.ok(ext.length >= 2, 'holes and data are told apart');
      assert.equal(ext.reduce((n, e) => n + e.length, 0), 8 * MiB);
      await assert.rejects(c.read(8 * MiB - 512, new Uint8Array(1024)), /errno 22/);
    } finally {
      await c.close();
    }
    // A client that does not ask keeps compact headers on the same server.
    const old = await NbdClient.connect({ address: { socketPath }, exportName: '' });
    try {
      assert.equal(old.extendedHeaders, false);
      const b = new Uint8Array(4096);
      await old.read(MiB + 64 * 1024, b);
      assert.equal(b[0], 0x5a);
    } finally {
      await old.close();
    }
  });
});

test('with extended headers every reply is a 32-byte chunk echoing the offset: NONE for success, ERROR for failure, BLOCK_STATUS_EXT for status', async () => {
  const node = new MemoryNode(MiB);
  const bitmap = new DirtyBitmap(MiB, 65536);
  bitmap.set(65536, 1);
  await withServer(node, bitmap, async (socketPath) => {
    const c = await TestClient.connect(socketPath);
    try {
      await c.readGreeting();
      c.write(Uint8Array.of(0, 0, 0, ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES));
      assert.equal((await c.option(Opt.EXTENDED_HEADERS))[0]?.replyType, Rep.ACK);
      const set = await c.option(Opt.SET_META_CONTEXT, encodeMetaContextRequest('', ['qemu:dirty-bitmap:b0']));
      assert.equal(set.length, 2, 'extended headers stand in for structured replies');
      const go = await c.option(Opt.GO, encodeExportRequest('', [Info.BLOCK_SIZE]));
      assert.equal(go[go.length - 1]?.replyType, Rep.ACK);

      const raw = async (): Promise<{ magic: number; flags: number; type: number; cookie: bigint; offset: bigint; payload: Buffer }> => {
        const h = await c.reader.read(32);
        const len = Number(h.readBigUInt64BE(24));
        return { magic: h.readUInt32BE(0), flags: h.readUInt16BE(4), type: h.readUInt16BE(6), cookie: h.readBigUInt64BE(8), offset: h.readBigUInt64BE(16), payload: len ? await c.reader.read(len) : Buffer.alloc(0) };
      };
      c.write(encodeExtendedRequestHeader({ flags: 0, type: Cmd.FLUSH, cookie: 7n, offset: 0n, length: 0 }));
      let r = await raw();
      assert.deepEqual([r.magic, r.type, r.flags & 1, r.cookie], [EXTENDED_REPLY_MAGIC, ReplyType.NONE, 1, 7n]);

      // 64-bit effect length: past the end, refused with an ERROR chunk that echoes the offset.
      c.write(encodeExtendedRequestHeader({ flags: 0, type: Cmd.WRITE_ZEROES, cookie: 8n, offset: 4096n, length: 2 ** 33 }));
      r = await raw();
      assert.deepEqual([r.type, r.cookie, r.offset, r.payload.readUInt32BE(0)], [ReplyType.ERROR, 8n, 4096n, NbdErrno.ENOSPC]);

      // A WRITE carries PAYLOAD_LEN; its data follows the 32-byte header.
      c.write(encodeExtendedRequestHeader({ flags: CmdFlag.PAYLOAD_LEN, type: Cmd.WRITE, cookie: 9n, offset: 512n, length: 512 }));
      c.write(new Uint8Array(512).fill(3));
      r = await raw();
      assert.deepEqual([r.type, r.cookie], [ReplyType.NONE, 9n]);
      assert.equal(node.bytes[600], 3);

      c.write(encodeExtendedRequestHeader({ flags: 0, type: Cmd.BLOCK_STATUS, cookie: 10n, offset: 0n, length: MiB }));
      r = await raw();
      assert.equal(r.type, ReplyType.BLOCK_STATUS_EXT);
      assert.equal(r.payload.readUInt32BE(4), 3, 'clean, dirty, clean');
      assert.deepEqual(
        [0, 1, 2].map((i) => [Number(r.payload.readBigUInt64BE(8 + 16 * i)), Number(r.payload.readBigUInt64BE(16 + 16 * i))]),
        [[65536, 0], [65536, DIRTY_STATE], [MiB - 131072, 0]],
      );

      // A compact header once extended headers are agreed is a protocol error: the server hangs up.
      c.write(encodeRequestHeader({ flags: 0, type: Cmd.FLUSH, cookie: 11n, offset: 0n, length: 0 }));
      c.write(new Uint8Array(4));
      await c.closed();
    } finally {
      c.close();
    }
  });
});

test('EXPORT_NAME after EXTENDED_HEADERS drops the connection (it has no error reply)', async () => {
  await withServer(new MemoryNode(MiB), null, async (socketPath) => {
    const c = await TestClient.connect(socketPath);
    try {
      await c.readGreeting();
      c.write(Uint8Array.of(0, 0, 0, ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES));
      assert.equal((await c.option(Opt.EXTENDED_HEADERS))[0]?.replyType, Rep.ACK);
      c.write(encodeOptionHeader(Opt.EXPORT_NAME));
      await c.closed();
    } finally {
      c.close();
    }
  });
});

test('qemu:dirty-bitmap contexts: LIST by namespace, SET by name, our client reads the dirty runs', async () => {
  const node = new MemoryNode(4 * MiB);
  const bitmap = new DirtyBitmap(4 * MiB, 65536);
  bitmap.set(MiB + 100, 200 * 1024);
  await withServer(node, bitmap, async (socketPath) => {
    const lister = await TestClient.connect(socketPath);
    try {
      await lister.readGreeting();
      lister.write(Uint8Array.of(0, 0, 0, ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES));
      await lister.option(Opt.STRUCTURED_REPLY);
      const names = (await lister.option(Opt.LIST_META_CONTEXT, encodeMetaContextRequest('', ['qemu:dirty-bitmap:']))).filter((r) => r.replyType === Rep.META_CONTEXT).map((r) => r.data.subarray(4).toString());
      assert.deepEqual(names, ['qemu:dirty-bitmap:b0']);
    } finally {
      lister.close();
    }
    for (const extendedHeaders of [false, true]) {
      const c = await NbdClient.connect({ address: { socketPath }, exportName: '', extendedHeaders, contexts: ['base:allocation', 'qemu:dirty-bitmap:b0'] });
      try {
        assert.deepEqual([...c.contextIds.keys()].sort(), ['base:allocation', 'qemu:dirty-bitmap:b0']);
        const runs = await c.contextStatus('qemu:dirty-bitmap:b0', 0, 4 * MiB);
        assert.deepEqual(runs, [
          { length: MiB, flags: 0 },
          { length: 4 * 65536, flags: DIRTY_STATE },
          { length: 3 * MiB - 4 * 65536, flags: 0 },
        ]);
      } finally {
        await c.close();
      }
    }
  });
});

test('bitmapExtents clips to the range, merges runs and honours the descriptor limit', () => {
  const b = new DirtyBitmap(MiB, 4096);
  b.set(0, 8192);
  b.set(16384, 4096);
  assert.deepEqual(bitmapExtents(b, { offset: 4096, length: 20480 }, 100), [
    { length: 4096, flags: 1 },
    { length: 8192, flags: 0 },
    { length: 4096, flags: 1 },
    { length: 4096, flags: 0 },
  ]);
  assert.deepEqual(bitmapExtents(b, { offset: 0, length: MiB }, 1), [{ length: 8192, flags: 1 }]);
  assert.deepEqual(bitmapExtents(b, { offset: 65536, length: 4096 }, 10), [{ length: 4096, flags: 0 }]);
});
