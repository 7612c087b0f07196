import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import fc from 'fast-check';
import { NbdServer } from '../../../src/nbd/server/index.js';
import { InFlightBudget } from '../../../src/nbd/server/in-flight.js';
import { Cmd, NbdErrno, encodeRequestHeader } from '../../../src/nbd/protocol/index.js';
import { MemoryNode } from './support/memory-node.js';
import { TestClient } from './support/test-client.js';

const MiB = 1024 * 1024;

async function withServer(fn: (socketPath: string, node: MemoryNode) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  const node = new MemoryNode(MiB);
  const server = new NbdServer();
  server.addExport({ name: '', node });
  await server.listen({ socketPath: `${dir}/s` });
  try {
    await fn(`${dir}/s`, node);
  } finally {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('the in-flight budget bounds bytes and requests, and always admits a lone large request', async () => {
  const b = new InFlightBudget({ maxBytes: 100, maxRequests: 2 });
  await b.acquire(500);
  let second = false;
  const p = b.acquire(10).then(() => (second = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(second, false);
  b.release(500);
  await p;
  await b.acquire(90);
  let third = false;
  const q = b.acquire(1).then(() => (third = true));
  await new Promise((r) => setImmediate(r));
  assert.equal(third, false, 'two requests in flight');
  b.release(10);
  await q;
  assert.equal(b.requests, 2);
  const idle = b.idle();
  b.release(90);
  b.release(1);
  await idle;
});

test('random bytes during the handshake never crash the server; it stays usable', async () => {
  await withServer(async (socketPath) => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
        const c = await TestClient.connect(socketPath);
        await c.readGreeting();
        c.write(Uint8Array.of(0, 0, 0, 1));
        c.write(bytes);
        await new Promise((r) => setTimeout(r, 2));
        c.close();
      }),
      { numRuns: 60 },
    );
    const ok = await TestClient.connect(socketPath);
    assert.equal((await ok.handshake()).size, BigInt(MiB));
    ok.close();
  });
});

test('random requests in transmission never crash the server; valid requests still work afterwards', async () => {
  await withServer(async (socketPath) => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({ type: fc.integer({ min: 0, max: 12 }), flags: fc.integer({ min: 0, max: 0xffff }), offset: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), length: fc.integer({ min: 0, max: 65536 }) }),
        async (r) => {
          if (r.type === Cmd.DISC) return;
          const c = await TestClient.connect(socketPath);
          await c.handshake({ structured: true, contexts: ['base:allocation'] });
          c.request({ ...r, cookie: 42n }, r.type === Cmd.WRITE ? new Uint8Array(r.length) : undefined);
          // Every request gets some reply with its cookie.
          const reply = await c.readReply();
          assert.equal(reply.cookie, 42n);
          c.close();
        },
      ),
      { numRuns: 60 },
    );
  });
});

test('a WRITE longer than 32 MiB is read through and refused with EINVAL; the stream stays in sync', async () => {
  await withServer(async (socketPath, node) => {
    const c = await TestClient.connect(socketPath);
    await c.handshake();
    const len = 32 * MiB + 1;
    c.write(encodeRequestHeader({ type: Cmd.WRITE, flags: 0, cookie: 1n, offset: 0n, length: len }));
    const chunk = new Uint8Array(MiB).fill(7);
    for (let sent = 0; sent < len; sent += chunk.byteLength) c.write(chunk.subarray(0, Math.min(chunk.byteLength, len - sent)));
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: NbdErrno.EINVAL, cookie: 1n });
    c.request({ type: Cmd.FLUSH, flags: 0, cookie: 2n, offset: 0n, length: 0 });
    assert.deepEqual(await c.readReply(), { kind: 'simple', error: 0, cookie: 2n });
    assert.equal(node.bytes[0], 0);
    c.close();
  });
});

test('a client that disconnects with requests in flight does not disturb the server', async () => {
  await withServer(async (socketPath, node) => {
    node.delayMs = 20;
    const c = await TestClient.connect(socketPath);
    await c.handshake();
    for (let i = 0; i < 8; i++) c.request({ type: Cmd.READ, flags: 0, cookie: BigInt(i), offset: 0n, length: 65536 });
    await new Promise((r) => setTimeout(r, 5));
    c.close();
    await new Promise((r) => setTimeout(r, 50));
    node.delayMs = 0;
    const d = await TestClient.connect(socketPath);
    await d.handshake();
    d.close();
  });
});
