import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { TestQmpClient } from '../unit/qmp/qmp-client.js';
import { run, runStatus, startServer } from './support/serve-process.js';

function tmp(): string {
  return fs.mkdtempSync(os.tmpdir() + '/vdisk-');
}

/** `vdisk --qmp` listening on `qmpPath`, and a client connected to it (the server stopped if the client cannot connect). */
async function startQmpDaemon(qmpPath: string): Promise<{ served: Awaited<ReturnType<typeof startServer>>; qmp: TestQmpClient }> {
  const served = await startServer(['vdisk', '--qmp', qmpPath], qmpPath, { probe: true });
  const qmp = await TestQmpClient.connect(qmpPath).catch(async (e: unknown) => {
    await served.stop();
    throw e;
  });
  return { served, qmp };
}

function ok(reply: Record<string, unknown>): unknown {
  assert.ok('return' in reply, `expected success, got ${JSON.stringify(reply)}`);
  return reply['return'];
}

test('a QMP script adds file+qcow2 nodes, exports them over NBD, resizes, removes the export and quits', async () => {
  const dir = tmp();
  const qmpPath = `${dir}/qmp.sock`;
  const nbdPath = `${dir}/nbd.sock`;
  try {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/a.qcow2`, '64M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 1M 64k', `${dir}/a.qcow2`]);
    const { served, qmp } = await startQmpDaemon(qmpPath);
    try {
      const greeting = await qmp.next((m) => 'QMP' in m);
      assert.deepEqual((greeting['QMP'] as { version: { qemu: unknown } }).version.qemu, { major: 7, minor: 2, micro: 0 });
      ok(await qmp.execute('qmp_capabilities'));
      const names = (ok(await qmp.execute('query-commands')) as Array<{ name: string }>).map((c) => c.name);
      for (const c of ['blockdev-add', 'blockdev-del', 'nbd-server-start', 'block-export-add', 'block-export-del', 'query-block-exports', 'block_resize', 'quit']) {
        assert.ok(names.includes(c), c);
      }
      ok(await qmp.execute('blockdev-add', { driver: 'file', filename: `${dir}/a.qcow2`, 'node-name': 'file0' }));
      ok(await qmp.execute('blockdev-add', { driver: 'qcow2', file: 'file0', 'node-name': 'disk0' }));
      ok(await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdPath } } }));
      ok(await qmp.execute('block-export-add', { type: 'nbd', id: 'exp0', 'node-name': 'disk0', writable: true }));
      assert.deepEqual(ok(await qmp.execute('query-block-exports')), [{ id: 'exp0', type: 'nbd', 'node-name': 'disk0', 'shutting-down': false }]);

      const uri = `nbd+unix:///disk0?socket=${nbdPath}`;
      assert.equal(run('nbdinfo', ['--size', uri]).trim(), String(64 * 1024 * 1024));
      run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 1M 64k', '-c', 'write -P 0x77 8M 4k', uri]);

      // Deleting a node in use is refused with a message; a duplicate export id too.
      const busy = await qmp.execute('blockdev-del', { 'node-name': 'disk0' });
      assert.match(String((busy['error'] as { desc: string }).desc), /busy|in use/);
      const dup = await qmp.execute('block-export-add', { type: 'nbd', id: 'exp0', 'node-name': 'disk0' });
      assert.ok('error' in dup);

      ok(await qmp.execute('block_resize', { 'node-name': 'disk0', size: 128 * 1024 * 1024 }));
      assert.equal(run('nbdinfo', ['--size', uri]).trim(), String(128 * 1024 * 1024));

      const nodes = ok(await qmp.execute('query-named-block-nodes')) as Array<Record<string, unknown>>;
      const disk = nodes.find((n) => n['node-name'] === 'disk0');
      assert.equal(disk?.['drv'], 'qcow2');
      assert.equal((disk?.['image'] as Record<string, unknown>)['virtual-size'], 128 * 1024 * 1024);
      assert.ok(nodes.some((n) => n['node-name'] === 'file0' && n['drv'] === 'file'));

      const from = qmp.messages.length;
      ok(await qmp.execute('block-export-del', { id: 'exp0' }));
      const ev = await qmp.next((m) => m['event'] === 'BLOCK_EXPORT_DELETED', from);
      assert.deepEqual(ev['data'], { id: 'exp0' });
      assert.notEqual(runStatus('nbdinfo', ['--size', uri]).status, 0);
      ok(await qmp.execute('blockdev-del', { 'node-name': 'disk0' }));
      ok(await qmp.execute('blockdev-del', { 'node-name': 'file0' }));
      ok(await qmp.execute('quit'));
      assert.equal(await served.exited, 0);
    } finally {
      qmp.close();
      await served.stop();
    }
    assert.ok(!fs.existsSync(qmpPath), 'the QMP socket is removed');
    run('qemu-img', ['check', `${dir}/a.qcow2`]);
    run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x77 8M 4k', `${dir}/a.qcow2`]);
    assert.match(run('qemu-img', ['info', `${dir}/a.qcow2`]), /virtual size: 128 MiB/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** The flags of the server's open descriptors of `file` (octal, from /proc/PID/fdinfo). */
function openFlags(pid: number, file: string): number[] {
  const flags: number[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    let target = '';
    try {
      target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    if (target !== file) continue;
    const m = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
    if (m?.[1]) flags.push(parseInt(m[1], 8));
  }
  return flags;
}

const O_DIRECT = 0o40000;

test('blockdev-add takes cache.direct and cache.no-flush: the image is opened O_DIRECT, query-named-block-nodes shows them, an inline file child inherits them, bad ones are refused by name', async () => {
  const dir = tmp();
  const qmpPath = `${dir}/qmp.sock`;
  const nbdPath = `${dir}/nbd.sock`;
  try {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/a.qcow2`, '64M']);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/b.qcow2`, '64M']);
    const { served, qmp } = await startQmpDaemon(qmpPath);
    try {
      await qmp.next((m) => 'QMP' in m);
      ok(await qmp.execute('qmp_capabilities'));
      const refused = async (args: Record<string, unknown>, message: RegExp): Promise<void> => {
        const r = await qmp.execute('blockdev-add', args);
        assert.match(String((r['error'] as { desc?: string } | undefined)?.desc), message);
      };
      await refused({ driver: 'file', filename: `${dir}/a.qcow2`, 'node-name': 'x', cache: { direct: 'yes' } }, /Invalid parameter type for 'cache\.direct', expected: boolean/);
      await refused({ driver: 'file', filename: `${dir}/a.qcow2`, 'node-name': 'x', cache: { bogus: true } }, /Parameter 'cache\.bogus' is unexpected/);
      // QEMU's two drivers for local files each refuse the other kind (/dev/null is a character device).
      await refused({ driver: 'host_device', filename: `${dir}/a.qcow2`, 'node-name': 'x' }, /^'host_device' driver requires '.*a\.qcow2' to be either a character or block device$/);
      await refused({ driver: 'file', filename: '/dev/null', 'node-name': 'x' }, /^'file' driver requires '\/dev\/null' to be a regular file$/);
      ok(await qmp.execute('blockdev-add', { driver: 'host_device', filename: '/dev/null', 'node-name': 'null0', 'read-only': true }));

      ok(await qmp.execute('blockdev-add', { driver: 'file', filename: `${dir}/a.qcow2`, 'node-name': 'f0', cache: { direct: true } }));
      ok(await qmp.execute('blockdev-add', { driver: 'qcow2', file: 'f0', 'node-name': 'd0' }));
      ok(await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'd1', cache: { direct: true, 'no-flush': true }, file: { driver: 'file', filename: `${dir}/b.qcow2` } }));
      const nodes = ok(await qmp.execute('query-named-block-nodes')) as Array<Record<string, unknown>>;
      const cacheOf = (pred: (n: Record<string, unknown>) => boolean): unknown => nodes.find(pred)?.['cache'];
      assert.deepEqual(cacheOf((n) => n['node-name'] === 'f0'), { writeback: true, direct: true, 'no-flush': false });
      assert.equal(nodes.find((n) => n['node-name'] === 'null0')?.['drv'], 'host_device');
      assert.deepEqual(cacheOf((n) => n['node-name'] === 'd0'), { writeback: true, direct: false, 'no-flush': false });
      assert.deepEqual(cacheOf((n) => n['node-name'] === 'd1'), { writeback: true, direct: true, 'no-flush': true });
      // The anonymous file child of d1 took its parent's switches.
      assert.deepEqual(cacheOf((n) => n['drv'] === 'file' && n['file'] === `${dir}/b.qcow2`), { writeback: true, direct: true, 'no-flush': true });
      const pid = served.proc.pid ?? 0;
      const a = openFlags(pid, `${dir}/a.qcow2`);
      assert.ok(a.length > 0 && a.some((f) => (f & O_DIRECT) !== 0), `a.qcow2 opened O_DIRECT (flags ${a.map((f) => f.toString(8)).join(', ')})`);
      assert.ok(openFlags(pid, `${dir}/b.qcow2`).some((f) => (f & O_DIRECT) !== 0), 'b.qcow2 opened O_DIRECT through its inline child');

      ok(await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdPath } } }));
      ok(await qmp.execute('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'd0', writable: true }));
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1M 256k', '-c', 'flush', `nbd+unix:///d0?socket=${nbdPath}`]);
      ok(await qmp.execute('quit'));
      await served.exited;
    } finally {
      qmp.close();
      await served.stop();
    }
    run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x3c 1M 256k', `${dir}/a.qcow2`]);
    run('qemu-img', ['check', `${dir}/a.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
