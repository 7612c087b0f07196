import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { TestQmpClient } from '../unit/qmp/qmp-client.js';
import { run, startServer } from './support/serve-process.js';

function tmp(): string {
  return fs.mkdtempSync(os.tmpdir() + '/vdisk-');
}

/** base.qcow2 (data at 0 and 4M) under top.qcow2 (data at 1M and over part of 4M). */
function makeChain(dir: string): void {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, '16M']);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 256k', '-c', 'write -P 0x22 4M 1M', `${dir}/base.qcow2`]);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', `${dir}/top.qcow2`]);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 1M 128k', '-c', 'write -P 0x44 4M 64k', '-c', 'write -z 8M 64k', `${dir}/top.qcow2`]);
}

test('command-line --blockdev/--nbd-server/--export serve two exports; a qcow2 chain maps like qemu-nbd -A', async () => {
  const dir = tmp();
  try {
    makeChain(dir);
    run('qemu-img', ['create', '-q', '-f', 'raw', `${dir}/r.raw`, '4M']);
    run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x99 0 4k', `${dir}/r.raw`]);
    const sock = `${dir}/v.sock`;
    const v = await startServer(
      [
        'vdisk',
        '--blockdev', `driver=file,filename=${dir}/top.qcow2,node-name=f0,read-only=on`,
        '--blockdev', 'driver=qcow2,file=f0,node-name=top,read-only=on',
        '--blockdev', JSON.stringify({ driver: 'raw', 'node-name': 'r', file: { driver: 'file', filename: `${dir}/r.raw` } }),
        '--nbd-server', `addr.type=unix,addr.path=${sock}`,
        '--export', 'type=nbd,id=e1,node-name=top,name=top,allocation-depth=on',
        '--export', 'type=nbd,id=e2,node-name=r,name=raw,writable=on',
      ],
      sock,
    );
    try {
      const q = await startServer(['qemu-nbd', '-A', '-r', '-t', '-e', '4', '-k', `${dir}/q.sock`, '-f', 'qcow2', `${dir}/top.qcow2`], `${dir}/q.sock`, { probe: true });
      try {
      const vt = `nbd+unix:///top?socket=${sock}`;
      const qt = `nbd+unix:///?socket=${dir}/q.sock`;
      assert.equal(run('nbdinfo', ['--map=qemu:allocation-depth', vt]), run('nbdinfo', ['--map=qemu:allocation-depth', qt]));
      assert.equal(run('nbdinfo', ['--map', vt]), run('nbdinfo', ['--map', qt]));
      run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', vt, qt]);
      const list = run('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${sock}`]);
      const names = (JSON.parse(list) as { exports: Array<{ 'export-name': string }> }).exports.map((e) => e['export-name']).sort();
      assert.deepEqual(names, ['raw', 'top']);
      run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x99 0 4k', '-c', 'write -P 0x98 1M 4k', `nbd+unix:///raw?socket=${sock}`]);
      } finally {
        await q.stop();
      }
    } finally {
      assert.equal(await v.stop(), 0);
    }
    run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x98 1M 4k', `${dir}/r.raw`]);
    run('qemu-img', ['check', `${dir}/top.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('blockdev-add driver=nbd connects to qemu-nbd; re-exported, it reads and maps the same (chardev + monitor form)', async () => {
  const dir = tmp();
  try {
    makeChain(dir);
    const q = await startServer(['qemu-nbd', '-r', '-t', '-e', '4', '-k', `${dir}/q.sock`, '-f', 'qcow2', `${dir}/top.qcow2`], `${dir}/q.sock`, { probe: true });
    const qmpPath = `${dir}/qmp.sock`;
    const v = await startServer(['vdisk', '--chardev', `socket,path=${qmpPath},server=on,wait=off,id=c0`, '--monitor', 'chardev=c0'], qmpPath, { probe: true }).catch(async (e: unknown) => {
      await q.stop();
      throw e;
    });
    const qmp = await TestQmpClient.connect(qmpPath);
    try {
      await qmp.next((m) => 'QMP' in m);
      await qmp.execute('qmp_capabilities');
      const add = await qmp.execute('blockdev-add', { driver: 'nbd', 'node-name': 'remote', server: { type: 'unix', path: `${dir}/q.sock` }, export: '' });
      assert.ok('return' in add, JSON.stringify(add));
      const start = await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: `${dir}/v.sock` } } });
      assert.ok('return' in start, JSON.stringify(start));
      const exp = await qmp.execute('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'remote', name: 'again' });
      assert.ok('return' in exp, JSON.stringify(exp));
      const again = `nbd+unix:///again?socket=${dir}/v.sock`;
      const direct = `nbd+unix:///?socket=${dir}/q.sock`;
      run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', again, direct]);
      assert.equal(run('nbdinfo', ['--map', again]), run('nbdinfo', ['--map', direct]));
      await qmp.execute('quit');
      assert.equal(await v.exited, 0);
    } finally {
      qmp.close();
      await v.stop();
      await q.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
