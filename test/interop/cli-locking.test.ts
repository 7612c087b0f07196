import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { openImage } from '../../src/block/index.js';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

/**
 * Starts qemu-io holding `file` open and waits until its locks are visible to qemu-img.
 * The probe (qemu-img info) itself locks the image for a moment; a qemu-io that starts
 * during a probe cannot take its write lock and exits, so it is started again.
 */
async function holdWithQemuIo(dir: string, args: readonly string[]): Promise<ChildProcess> {
  const start = (): { child: ChildProcess; exited: () => boolean } => {
    const child = spawn('qemu-io', [...args, '-c', 'sleep 20000'], { cwd: dir, stdio: 'ignore' });
    let gone = false;
    child.once('exit', () => (gone = true));
    return { child, exited: () => gone };
  };
  let running = start();
  const file = args[args.length - 1] ?? '';
  for (let i = 0; i < 200; i++) {
    if (running.exited()) running = start();
    await new Promise((r) => setTimeout(r, 25));
    const probe = qemu('qemu-img', dir, ['info', '--output=json', file]);
    if (probe.status !== 0 && probe.stderr.includes('lock') && !running.exited()) return running.child;
  }
  running.child.kill();
  throw new Error('qemu-io did not take its locks');
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await done;
}

test('an image qemu-io writes is refused by vdisk like qemu-img refuses it, and -U opens it', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    const child = await holdWithQemuIo(t.dir, ['a.qcow2']);
    try {
      for (const argv of [
        ['info', 'a.qcow2'],
        ['check', 'a.qcow2'],
        ['compare', 'a.qcow2', 'a.qcow2'],
        ['resize', 'a.qcow2', '2M'],
        ['info', '-U', '--output=json', 'a.qcow2'],
        ['map', '-U', 'a.qcow2'],
      ]) {
        const q = normalised(qemu('qemu-img', t.dir, argv));
        const v = normalised(await vdisk(t.dir, argv));
        assert.deepEqual({ ...v, stdout: v.stdout.replace(/"actual-size": \d+/, '') }, { ...q, stdout: q.stdout.replace(/"actual-size": \d+/, '') }, argv.join(' '));
      }
      assert.match((await vdisk(t.dir, ['info', 'a.qcow2'])).stderr, /Failed to get shared "write" lock\nIs another process using the image \[a\.qcow2\]\?/);
    } finally {
      await stop(child);
    }
  } finally {
    t.cleanup();
  }
});

test('an image vdisk holds open for writing is refused by qemu-img and qemu-io, shared with -U', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
    const node = await openImage(`${t.dir}/a.qcow2`, { readOnly: false });
    try {
      const info = qemu('qemu-img', t.dir, ['info', `${t.dir}/a.qcow2`]);
      assert.equal(info.status, 1);
      assert.match(info.stderr, /Failed to get shared "write" lock/);
      assert.equal(qemu('qemu-img', t.dir, ['info', '-U', 'a.qcow2']).status, 0);
      const writer = qemu('qemu-io', t.dir, ['-c', 'write 0 512', 'a.qcow2']);
      assert.match(writer.stderr, /Failed to get "write" lock/);
    } finally {
      await node.close();
    }
    assert.equal(qemu('qemu-img', t.dir, ['info', 'a.qcow2']).status, 0, 'locks are released on close');
    // A raw image shares everything with qemu-img's readers, as QEMU's raw driver does.
    const raw = await openImage(`${t.dir}/r.img`, { format: 'raw', readOnly: false });
    try {
      assert.equal(qemu('qemu-img', t.dir, ['info', '-f', 'raw', 'r.img']).status, 0);
    } finally {
      await raw.close();
    }
  } finally {
    t.cleanup();
  }
});

test('a reader does not block readers, and a vdisk reader blocks a qemu writer of qcow2', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '1M']);
    const a = await openImage(`${t.dir}/a.qcow2`, { readOnly: true });
    const b = await openImage(`${t.dir}/a.qcow2`, { readOnly: true });
    try {
      assert.equal(qemu('qemu-img', t.dir, ['info', 'a.qcow2']).status, 0);
      assert.match(qemu('qemu-io', t.dir, ['-c', 'write 0 512', 'a.qcow2']).stderr, /Failed to get "write" lock/);
      await assert.rejects(openImage(`${t.dir}/a.qcow2`, { readOnly: false }), /Failed to get "write" lock/);
    } finally {
      await a.close();
      await b.close();
    }
  } finally {
    t.cleanup();
  }
});
