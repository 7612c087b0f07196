import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { Daemon, parseKeyval, parsePskKeys, typed } from '../../../src/daemon/index.js';
import { NbdClient, RequestGate } from '../../../src/nbd/index.js';
import { MemoryNode } from '../nbd/support/memory-node.js';

async function withDaemon(fn: (d: Daemon, sock: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  const d = new Daemon();
  try {
    await d.startNbdServer({ address: { socketPath: `${dir}/s.sock` } });
    await fn(d, `${dir}/s.sock`);
  } finally {
    await d.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('RequestGate: hold waits for admitted requests, new ones wait and run in arrival order after release', async () => {
  const gate = new RequestGate();
  const order: string[] = [];
  let finishFirst: () => void = () => undefined;
  const first = gate.run(() => new Promise<void>((r) => (finishFirst = r)).then(() => order.push('first')));
  const held = gate.hold().then(() => order.push('drained'));
  const second = gate.run(async () => void order.push('second'));
  const third = gate.run(async () => void order.push('third'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, []);
  finishFirst();
  await held;
  assert.deepEqual(order, ['first', 'drained']);
  gate.release();
  await Promise.all([first, second, third]);
  assert.deepEqual(order, ['first', 'drained', 'second', 'third']);
});

test('replace switches an export to another node with no request lost: earlier requests finish on the old node', async () => {
  await withDaemon(async (d, sock) => {
    const a = new MemoryNode(1 << 20);
    const b = new MemoryNode(1 << 20);
    await a.write(0, new Uint8Array(1 << 20).fill(0xaa));
    await b.write(0, new Uint8Array(1 << 20).fill(0xbb));
    a.delayMs = 20;
    d.add('a', a);
    d.add('b', b);
    d.addExport({ id: 'e', nodeName: 'a', name: 'disk' });
    const c = await NbdClient.connect({ address: { socketPath: sock }, exportName: 'disk' });
    try {
      const before = Array.from({ length: 8 }, () => new Uint8Array(4096));
      const reads = before.map((buf, i) => c.read(i * 4096, buf));
      // Switch once the server has admitted all eight (requests not yet received would rightly go to b).
      const gate = d.exports[0]?.nbd.gate;
      while ((gate?.active ?? 0) < 8) await new Promise((r) => setTimeout(r, 1));
      await d.replace(a, b);
      await Promise.all(reads);
      for (const buf of before) assert.ok(buf.every((x) => x === 0xaa));
      const after = new Uint8Array(4096);
      await c.read(0, after);
      assert.ok(after.every((x) => x === 0xbb));
    } finally {
      await c.close();
    }
  });
});

test('onRelease fires for export removal, node deletion and shutdown; busy nodes cannot be deleted', async () => {
  const seen: string[] = [];
  await withDaemon(async (d) => {
    const n = new MemoryNode(65536);
    d.add('n', n);
    d.onRelease((node, reason) => seen.push(`${d.nameOf(node) ?? '?'}:${reason}`));
    d.addExport({ id: 'e', nodeName: 'n' });
    await assert.rejects(d.deleteNode('n'), /busy/);
    await d.deleteExport('e');
    await d.deleteNode('n');
    d.add('m', new MemoryNode(65536));
  });
  assert.deepEqual(seen, ['n:export-removed', 'n:node-deleted', 'm:shutdown']);
});

test('NbdClient reads, writes, zeroes, trims and maps through our server; a read-only export refuses writes with EPERM', async () => {
  await withDaemon(async (d, sock) => {
    const n = new MemoryNode(1 << 20);
    d.add('n', n);
    d.addExport({ id: 'rw', nodeName: 'n', name: 'rw', writable: true });
    d.addExport({ id: 'ro', nodeName: 'n', name: 'ro' });
    const c = await NbdClient.connect({ address: { socketPath: sock }, exportName: 'rw' });
    try {
      assert.equal(c.size, 1 << 20);
      await c.write(8192, new Uint8Array(4096).fill(7), true);
      const back = new Uint8Array(4096);
      await c.read(8192, back);
      assert.ok(back.every((x) => x === 7));
      await c.writeZeroes(8192, 4096, 0);
      await c.read(8192, back);
      assert.ok(back.every((x) => x === 0));
      await c.write(65536, new Uint8Array(4096).fill(1));
      await c.flush();
      const map = await c.blockStatus(0, 1 << 20);
      assert.equal(map.reduce((s, e) => s + e.length, 0), 1 << 20);
      assert.ok(map.some((e) => !e.hole));
      await c.trim(65536, 4096);
    } finally {
      await c.close();
    }
    const r = await NbdClient.connect({ address: { socketPath: sock }, exportName: 'ro' });
    try {
      assert.equal(r.readOnly, true);
      await assert.rejects(r.write(0, new Uint8Array(512)), (e: unknown) => (e as { code?: string }).code === 'EPERM');
    } finally {
      await r.close();
    }
    await assert.rejects(NbdClient.connect({ address: { socketPath: sock }, exportName: 'nope' }), /not present|refused/);
  });
});

test('keyval parses QEMU option text: commas, nesting, implied keys and JSON', () => {
  assert.deepEqual(parseKeyval('driver=file,filename=a,,b.img,node-name=f'), { driver: 'file', filename: 'a,b.img', 'node-name': 'f' });
  assert.deepEqual(parseKeyval('addr.type=unix,addr.path=/s'), { addr: { type: 'unix', path: '/s' } });
  assert.deepEqual(parseKeyval('tls-creds-psk,id=t,dir=/d', 'qom-type'), { 'qom-type': 'tls-creds-psk', id: 't', dir: '/d' });
  assert.deepEqual(parseKeyval('{"driver":"raw","file":{"driver":"file"}}'), { driver: 'raw', file: { driver: 'file' } });
  assert.throws(() => parseKeyval('a=1,a=2'), /twice/);
  assert.throws(() => parseKeyval('novalue'), /Expected '='/);
  // on/off become booleans at any depth; a bad value is named by its whole dotted key.
  const bools = { bools: ['direct', 'no-flush', 'read-only'] };
  assert.deepEqual(typed(parseKeyval('driver=file,read-only=on,cache.direct=on,cache.no-flush=off'), bools), {
    driver: 'file',
    'read-only': true,
    cache: { direct: true, 'no-flush': false },
  });
  assert.throws(() => typed(parseKeyval('driver=file,cache.direct=maybe'), bools), /Parameter 'cache\.direct' expects 'on' or 'off'/);
});

test('PSK keys files hold username:hexkey lines; anything else is refused with the line number', () => {
  const keys = parsePskKeys('qemu:00ff\nalice:0a0b0c\n', 'keys.psk');
  assert.deepEqual([...keys.keys()], ['qemu', 'alice']);
  assert.deepEqual([...(keys.get('qemu') ?? [])], [0, 255]);
  assert.throws(() => parsePskKeys('qemu:xyz\n', 'keys.psk'), /line 1/);
  assert.throws(() => parsePskKeys('\n', 'keys.psk'), /no keys/);
});
