import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { NbdClient, NbdServer, tlsUpgrader } from '../../../src/nbd/index.js';
import { MemoryNode } from './support/memory-node.js';

test('STARTTLS with PSK: our client gets in with the right key, is refused without TLS or with a wrong key', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  const key = randomBytes(32);
  const server = new NbdServer({ tls: tlsUpgrader({ kind: 'psk', keys: new Map([['qemu', key]]) }) });
  try {
    const node = new MemoryNode(1 << 20);
    await node.write(0, new Uint8Array(4096).fill(9));
    server.addExport({ name: 'd', node });
    await server.listen({ socketPath: `${dir}/s.sock` });
    const address = { socketPath: `${dir}/s.sock` };
    const c = await NbdClient.connect({ address, exportName: 'd', tls: { kind: 'psk', identity: 'qemu', key } });
    try {
      const buf = new Uint8Array(4096);
      await c.read(0, buf);
      assert.ok(buf.every((x) => x === 9));
    } finally {
      await c.close();
    }
    await assert.rejects(NbdClient.connect({ address, exportName: 'd' }), /TLS|refused/);
    await assert.rejects(NbdClient.connect({ address, exportName: 'd', tls: { kind: 'psk', identity: 'qemu', key: randomBytes(32) } }));
  } finally {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
