import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { ArenaReader } from '../../../src/nbd/server/arena-reader.js';
import { EndOfStream } from '../../../src/nbd/server/socket-reader.js';

/** A connected pair of unix sockets: the server's end (paused, nothing read yet) and the client's. */
async function socketPair(): Promise<{ server: net.Socket; client: net.Socket; done: () => void }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-arena-'));
  const file = path.join(dir, 's.sock');
  const accepted = new Promise<net.Socket>((resolve) => {
    const srv = net.createServer({ pauseOnConnect: true }, (s) => {
      srv.close();
      resolve(s);
    });
    srv.listen(file);
  });
  await new Promise<void>((resolve) => setImmediate(resolve));
  const client = net.createConnection(file);
  const server = await accepted;
  return {
    server,
    client,
    done: () => {
      client.destroy();
      server.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Bytes that say where they are: message `m`, byte `i`. */
function pattern(m: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = (m * 131 + i * 7 + (i >> 9)) & 0xff;
  return b;
}

/** A 8-byte frame header: message number and payload length. */
function frame(m: number, length: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32BE(m, 0);
  h.writeUInt32BE(length, 4);
  return Buffer.concat([h, pattern(m, length)]);
}

/** Writes `bytes` in pieces of random sizes, sometimes letting the reader run in between. */
async function writeInPieces(socket: net.Socket, bytes: Buffer, seed: number): Promise<void> {
  let x = seed;
  const rand = (n: number): number => {
    x = (x * 1103515245 + 12345) & 0x7fffffff;
    return x % n;
  };
  for (let at = 0; at < bytes.length; ) {
    const piece = Math.min(bytes.length - at, 1 + rand(400 * 1024));
    if (!socket.write(bytes.subarray(at, at + piece))) await new Promise((resolve) => socket.once('drain', resolve));
    at += piece;
    if (rand(4) === 0) await new Promise((resolve) => setImmediate(resolve));
  }
}

test('framed payloads read through arenas arrive whole and in order, large ones as views of an arena, and held payloads are never overwritten', async () => {
  const { server, client, done } = await socketPair();
  try {
    const reader = ArenaReader.take(server, Buffer.alloc(0));
    assert.ok(reader, 'a unix socket reads into arenas');
    const sizes = [256 * 1024, 4096, 256 * 1024 + 512, 0, 1024 * 1024, 65536, 5 * 1024 * 1024, 300 * 1024, 17];
    const messages = Array.from({ length: 180 }, (_, m) => sizes[m % sizes.length] ?? 0);
    const stream = Buffer.concat(messages.map((len, m) => frame(m, len)));
    const writing = writeInPieces(client, stream, 7);

    const held: Array<{ m: number; payload: Buffer }> = [];
    const arenas = new Set<ArrayBufferLike>();
    let views = 0;
    for (let m = 0; m < messages.length; m++) {
      const h: Buffer = reader.tryRead(8) ?? (await reader.read(8));
      assert.equal(h.readUInt32BE(0), m, 'frames in order');
      const length = h.readUInt32BE(4);
      assert.equal(length, messages[m]);
      if (length === 0) continue;
      const into = Buffer.allocUnsafe(length);
      const payload = reader.tryReadPayload(length, into) ?? (await reader.readPayload(length, into));
      assert.ok(payload.equals(pattern(m, length)), `payload ${m} (${length} bytes) intact when read`);
      if (payload.buffer !== into.buffer) {
        views++;
        arenas.add(payload.buffer);
      }
      held.push({ m, payload });
      // Payloads are released late and out of order, as writes complete; the first few are held to the end.
      if (held.length > 12) {
        const i = 3 + ((m * 5) % (held.length - 3));
        const [gone] = held.splice(i, 1);
        if (gone) {
          assert.ok(gone.payload.equals(pattern(gone.m, gone.payload.length)), `payload ${gone.m} unchanged until released`);
          reader.release(gone.payload);
        }
      }
    }
    await writing;
    for (const { m, payload } of held) assert.ok(payload.equals(pattern(m, payload.length)), `payload ${m} unchanged while held`);
    assert.ok(views > 60, `most large payloads are views of an arena (${views})`);
    assert.ok(arenas.size <= 12, `arenas are reused (${arenas.size} for ${(stream.length / 2 ** 20).toFixed(0)} MiB)`);
    assert.equal(reader.buffered, 0);
  } finally {
    done();
  }
});

test('bytes received before the switch are read first', async () => {
  const { server, client, done } = await socketPair();
  try {
    const reader = ArenaReader.take(server, Buffer.from('early:'));
    assert.ok(reader);
    client.write('late');
    const b = await reader.read(10);
    assert.equal(b.toString(), 'early:late');
  } finally {
    done();
  }
});

test('after stop, reads fail and the peer end of stream still closes the socket', async () => {
  const { server, client, done } = await socketPair();
  try {
    const reader = ArenaReader.take(server, Buffer.alloc(0));
    assert.ok(reader);
    const pending = reader.read(64);
    client.write(Buffer.alloc(10));
    reader.stop('server shutting down');
    await assert.rejects(pending, EndOfStream);
    await assert.rejects(reader.read(1), EndOfStream);
    const closed = new Promise((resolve) => server.once('close', resolve));
    client.write(Buffer.alloc(1024 * 1024));
    client.end();
    server.end();
    await closed;
  } finally {
    done();
  }
});

test('a stream without a socket handle is not taken over', () => {
  assert.equal(ArenaReader.take(new PassThrough() as unknown as net.Socket, Buffer.alloc(0)), null);
});
