import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import { ServeDaemon, dataDirectory, ensureDefaultImage, nbdUri } from '../../../src/daemon/index.js';
import { createImage } from '../../../src/block/index.js';

test('nbdUri spells unix and tcp addresses as libnbd and qemu expect', () => {
  assert.equal(nbdUri({ socketPath: '/tmp/a b.sock' }, ''), 'nbd+unix:///?socket=/tmp/a%20b.sock');
  assert.equal(nbdUri({ socketPath: '/run/s' }, 'disk0'), 'nbd+unix:///disk0?socket=/run/s');
  assert.equal(nbdUri({ host: '0.0.0.0', port: 10809 }, ''), 'nbd://localhost:10809/');
  assert.equal(nbdUri({ host: '::1', port: 5000 }, 'x'), 'nbd://[::1]:5000/x');
});

test('the data directory comes from VDISK_DATA_DIR, then XDG_DATA_HOME, then ~/.local/share', () => {
  assert.equal(dataDirectory({ VDISK_DATA_DIR: '/d' }), '/d');
  assert.equal(dataDirectory({ XDG_DATA_HOME: '/x' }), '/x/vdisk');
  assert.match(dataDirectory({}), /\.local\/share\/vdisk$/);
});

test('the default image is created once, 1 GiB, and reused', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const first = await ensureDefaultImage(`${dir}/data`);
    assert.equal(first.created, true);
    assert.ok(fs.existsSync(first.path));
    const second = await ensureDefaultImage(`${dir}/data`);
    assert.deepEqual(second, { ...first, created: false });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('ServeDaemon listens on a unix socket, replaces a stale one, and removes it when stopped', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    await createImage(`${dir}/a.raw`, 'raw', { size: 1 << 20, options: {} });
    // A socket file left behind by a dead server.
    const stale = net.createServer();
    await new Promise<void>((r) => stale.listen(`${dir}/s`, r));
    await new Promise<void>((r) => {
      stale.close(() => r());
    });
    fs.writeFileSync(`${dir}/not-a-socket`, 'x');
    await assert.rejects(
      ServeDaemon.start({ image: `${dir}/a.raw`, format: 'raw', exportName: '', address: { socketPath: `${dir}/not-a-socket` }, maxClients: 1 }),
      /not a socket/,
    );
    const d = await ServeDaemon.start({ image: `${dir}/a.raw`, format: 'raw', exportName: 'e', address: { socketPath: `${dir}/s` }, maxClients: 1, persistent: true });
    assert.equal(d.uri, `nbd+unix:///e?socket=${dir}/s`);
    assert.ok(fs.existsSync(`${dir}/s`));
    await d.stop();
    await d.stopped;
    assert.equal(fs.existsSync(`${dir}/s`), false);
    await d.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('ServeDaemon on TCP port 0 reports the port it got', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    await createImage(`${dir}/a.raw`, 'raw', { size: 1 << 20, options: {} });
    const d = await ServeDaemon.start({ image: `${dir}/a.raw`, format: 'raw', exportName: '', address: { host: '127.0.0.1', port: 0 }, maxClients: 0, persistent: true });
    assert.ok('port' in d.address && d.address.port > 0);
    assert.match(d.uri, /^nbd:\/\/127\.0\.0\.1:\d+\/$/);
    await d.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('ServeDaemon refuses a missing image with the open error', async () => {
  await assert.rejects(
    ServeDaemon.start({ image: '/nonexistent/x.raw', exportName: '', address: { socketPath: '/tmp/never' }, maxClients: 1 }),
    /nonexistent/,
  );
});
