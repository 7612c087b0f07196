import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { NodeHostFile } from '../../../src/host/node-file.js';
import { nativeHost } from '../../../src/host/native.js';
import { DirectSocket } from '../../../src/nbd/server/direct-socket.js';
import { ReplyWriter } from '../../../src/nbd/server/reply-writer.js';

const canSendFile = nativeHost()?.sendFileNoWait !== undefined;

/** A connected pair of unix sockets: [server side, client side]. */
async function socketPair(dir: string): Promise<[net.Socket, net.Socket]> {
  const sockPath = path.join(dir, 's.sock');
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(sockPath, r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect(sockPath);
  await new Promise<void>((r) => client.once('connect', () => r()));
  const side = await accepted;
  server.close();
  return [side, client];
}

test(
  'replies sent straight from a file and ordinary replies reach a slow client whole and in order, the rest of a short send queued before later replies',
  { skip: canSendFile ? false : 'the addon has no sendfile' },
  async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-'));
    const data = randomBytes(4 * 1024 * 1024);
    const file = path.join(dir, 'data');
    fs.writeFileSync(file, data);
    const host = await NodeHostFile.open(file, { readOnly: true });
    const [side, client] = await socketPair(dir);
    try {
      const direct = DirectSocket.of(side, {});
      assert.ok(direct, 'a plain unix socket can be written directly');
      const writer = new ReplyWriter(side, direct);
      // The client does not read until everything is queued: the socket fills and direct sends fall short.
      client.pause();
      const expected: Buffer[] = [];
      const sends: Promise<void>[] = [];
      let direct0 = 0;
      let rests = 0;
      for (let i = 0; i < 64; i++) {
        const header = Buffer.alloc(16, i);
        const offset = (i * 65536 + i * 512) % (data.length - 200000);
        const length = 131072 + i * 1000;
        expected.push(header, data.subarray(offset, offset + length));
        if (i % 5 === 4) {
          sends.push(writer.send([header, data.subarray(offset, offset + length)]));
          continue;
        }
        const sent = writer.trySendDirect(
          16 + length,
          (fd) => host.sendToSocket(fd, header, offset, length),
          async (n) => {
            rests++;
            // The rest is read later (as a READ's rest reads the image): replies queued meanwhile must wait.
            await new Promise((r) => setTimeout(r, 5));
            const whole = Buffer.concat([header, data.subarray(offset, offset + length)]);
            return { parts: [whole.subarray(n)] };
          },
        );
        if (sent) direct0++;
        sends.push(sent ?? writer.send([header, data.subarray(offset, offset + length)]));
      }
      const want = Buffer.concat(expected);
      const got: Buffer[] = [];
      let have = 0;
      const all = new Promise<void>((resolve) => {
        client.on('data', (chunk: Buffer) => {
          got.push(chunk);
          have += chunk.length;
          if (have >= want.length) resolve();
        });
      });
      await new Promise((r) => setTimeout(r, 20));
      client.resume();
      await all;
      await Promise.all(sends);
      assert.ok(direct0 > 0, 'some replies went straight from the file');
      assert.ok(rests > 0, 'some direct sends fell short and had their rest queued');
      assert.equal(writer.directReplies, direct0);
      assert.ok(Buffer.concat(got).equals(want), 'the client read every reply whole, in order');
    } finally {
      side.destroy();
      client.destroy();
      await host.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

test('VDISK_NO_SENDFILE=1 and streams without a descriptor give no direct socket', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-'));
  const [side, client] = await socketPair(dir);
  try {
    assert.equal(DirectSocket.of(side, { VDISK_NO_SENDFILE: '1' }), null);
    assert.equal(new ReplyWriter(side, null).trySendDirect(1, () => 1, () => Promise.resolve({ parts: [] })), null);
  } finally {
    side.destroy();
    client.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a file opened O_DIRECT or O_DSYNC has no sendfile path', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-'));
  const file = path.join(dir, 'data');
  fs.writeFileSync(file, Buffer.alloc(8192, 1));
  const dsync = await NodeHostFile.open(file, { dsync: true });
  try {
    assert.equal(dsync.sendToSocket(0, new Uint8Array(1), 0, 4096), null);
  } finally {
    await dsync.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
