import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpServer, QmpError } from '../../../src/qmp/index.js';
import { TestQmpClient } from './qmp-client.js';

async function withServer(fn: (server: QmpServer, path: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-qmp-'));
  const path = join(dir, 'qmp.sock');
  const server = new QmpServer({ version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'vdisk test' } });
  await server.listenUnix(path);
  try {
    await fn(server, path);
  } finally {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('greets with the QMP banner and requires qmp_capabilities first', () =>
  withServer(async (_server, path) => {
    const c = await TestQmpClient.connect(path);
    const greeting = await c.next((m) => 'QMP' in m);
    assert.deepEqual((greeting['QMP'] as Record<string, unknown>)['capabilities'], ['oob']);
    const early = await c.execute('query-version');
    assert.deepEqual(early['error'], { class: 'CommandNotFound', desc: "Expecting capabilities negotiation with 'qmp_capabilities'" });
    assert.deepEqual((await c.execute('qmp_capabilities'))['return'], {});
    const v = await c.execute('query-version');
    assert.deepEqual((v['return'] as Record<string, unknown>)['qemu'], { major: 7, minor: 2, micro: 0 });
    const again = await c.execute('qmp_capabilities');
    assert.equal((again['error'] as Record<string, unknown>)['class'], 'CommandNotFound');
    c.close();
  }));

test('unknown commands, bad members and bad JSON get QEMU-worded errors, and the session goes on', () =>
  withServer(async (_server, path) => {
    const c = await TestQmpClient.connect(path);
    await c.execute('qmp_capabilities');
    assert.deepEqual((await c.execute('no-such-thing'))['error'], { class: 'CommandNotFound', desc: 'The command no-such-thing has not been found' });
    const n = c.messages.length;
    c.sendRaw('{"execute": "query-version", "bogus": 1}');
    const bad = await c.next((m) => 'error' in m, n);
    assert.match(String((bad['error'] as Record<string, unknown>)['desc']), /member 'bogus' is unexpected/);
    const n2 = c.messages.length;
    c.sendRaw('{"execute": ');
    c.sendRaw('"query-version", "id": 7}{"execute": "query-version", "id": 8}');
    const r7 = await c.next((m) => m['id'] === 7, n2);
    const r8 = await c.next((m) => m['id'] === 8, n2);
    assert.ok('return' in r7 && 'return' in r8);
    const n3 = c.messages.length;
    c.sendRaw('{"execute": query}');
    const perr = await c.next((m) => 'error' in m, n3);
    assert.match(String((perr['error'] as Record<string, unknown>)['desc']), /JSON parse error/);
    assert.ok('return' in (await c.execute('query-version')));
    c.close();
  }));

test('arguments are checked against the command parameters', () =>
  withServer(async (server, path) => {
    server.register('block-job-set-speed', { params: { device: 'str', speed: 'int' }, handler: () => ({}) });
    const c = await TestQmpClient.connect(path);
    await c.execute('qmp_capabilities');
    assert.match(String(((await c.execute('block-job-set-speed', { device: 'j' }))['error'] as Record<string, unknown>)['desc']), /Parameter 'speed' is missing/);
    assert.match(String(((await c.execute('block-job-set-speed', { device: 'j', speed: 'x' }))['error'] as Record<string, unknown>)['desc']), /Invalid parameter type for 'speed', expected: integer/);
    assert.match(String(((await c.execute('block-job-set-speed', { device: 'j', speed: 1, extra: 2 }))['error'] as Record<string, unknown>)['desc']), /Parameter 'extra' is unexpected/);
    assert.deepEqual((await c.execute('block-job-set-speed', { device: 'j', speed: 1 }))['return'], {});
    c.close();
  }));

test('handler errors become error replies with their class', () =>
  withServer(async (server, path) => {
    server.register('x-fail', { handler: () => { throw new QmpError('DeviceNotFound', "Block job 'j' not found"); } });
    const c = await TestQmpClient.connect(path);
    await c.execute('qmp_capabilities');
    assert.deepEqual((await c.execute('x-fail'))['error'], { class: 'DeviceNotFound', desc: "Block job 'j' not found" });
    c.close();
  }));

test('events reach negotiated sessions only, with a timestamp', () =>
  withServer(async (server, path) => {
    const a = await TestQmpClient.connect(path);
    const b = await TestQmpClient.connect(path);
    await a.execute('qmp_capabilities');
    await b.next((m) => 'QMP' in m);
    server.emitEvent('JOB_STATUS_CHANGE', { id: 'j', status: 'running' });
    const ev = await a.next((m) => m['event'] === 'JOB_STATUS_CHANGE');
    assert.deepEqual(ev['data'], { id: 'j', status: 'running' });
    const ts = ev['timestamp'] as Record<string, number>;
    assert.ok(ts['seconds']! > 0 && ts['microseconds']! >= 0);
    await b.execute('query-version').catch(() => undefined);
    assert.ok(!b.messages.some((m) => 'event' in m));
    a.close();
    b.close();
  }));

test('oversized messages are refused without unbounded buffering', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-qmp-'));
  const path = join(dir, 'qmp.sock');
  const server = new QmpServer({ version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, maxMessageBytes: 1024 });
  await server.listenUnix(path);
  const c = await TestQmpClient.connect(path);
  try {
    await c.execute('qmp_capabilities');
    const n = c.messages.length;
    c.sendRaw(`{"execute": "query-version", "arguments": {"x": "${'a'.repeat(4096)}"}}`);
    const err = await c.next((m) => 'error' in m, n);
    assert.match(String((err['error'] as Record<string, unknown>)['desc']), /exceeds 1024 bytes/);
    assert.ok('return' in (await c.execute('query-version')), 'the session goes on after an oversized message');
  } finally {
    c.close();
    await server.close();
  }
  assert.ok(!existsSync(path), 'socket removed on close');
  rmSync(dir, { recursive: true, force: true });
});
