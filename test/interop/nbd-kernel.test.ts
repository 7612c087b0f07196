import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from './support/serve-process.js';

/**
 * Why the kernel's NBD client cannot be used on this machine, or null when it can:
 * the nbd module must be loaded (or loadable) and nbd-client installed.
 */
function kernelNbdUnavailable(): string | null {
  if (!existsSync('/sys/module/nbd')) {
    const probe = spawnSync('modprobe', ['nbd'], { encoding: 'utf8' });
    if (probe.error || probe.status !== 0) {
      let config = '';
      try {
        config = /CONFIG_BLK_DEV_NBD=?[^\n]*|# CONFIG_BLK_DEV_NBD is not set/.exec(execFileSync('sh', ['-c', 'zcat /proc/config.gz 2>/dev/null'], { encoding: 'utf8' }))?.[0] ?? '';
      } catch {
        config = '';
      }
      const why = probe.error ? `modprobe is not available (${probe.error.message})` : (probe.stderr || probe.stdout).trim();
      return `the nbd kernel module cannot be loaded: ${why}${config ? ` (${config})` : ''}`;
    }
  }
  if (!existsSync('/dev/nbd0')) return 'the nbd module is loaded but /dev/nbd0 does not exist';
  if (spawnSync('nbd-client', ['--help']).error) return 'nbd-client is not installed';
  return null;
}

test('the kernel nbd-client reads and writes through vdisk serve', async (t) => {
  const unavailable = kernelNbdUnavailable();
  if (unavailable !== null) {
    // Issue 5: "skip with a message where the nbd module cannot be loaded".
    t.skip(unavailable);
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-knbd-'));
  const sock = join(dir, 'nbd.sock');
  const image = join(dir, 'disk.qcow2');
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
  const served = await startServer(['vdisk', 'serve', '-t', '-k', sock, '-f', 'qcow2', image], sock);
  try {
    execFileSync('nbd-client', ['-unix', sock, '/dev/nbd0', '-N', '', '-b', '512'], { stdio: 'ignore' });
    try {
      execFileSync('dd', ['if=/dev/urandom', `of=${join(dir, 'data')}`, 'bs=1M', 'count=4'], { stdio: 'ignore' });
      execFileSync('dd', [`if=${join(dir, 'data')}`, 'of=/dev/nbd0', 'bs=1M', 'oflag=direct', 'seek=3'], { stdio: 'ignore' });
      execFileSync('sync');
      const back = execFileSync('dd', ['if=/dev/nbd0', 'bs=1M', 'skip=3', 'count=4', 'iflag=direct'], { stdio: ['ignore', 'pipe', 'ignore'] });
      assert.ok(back.equals(readFileSync(join(dir, 'data'))), 'data read back through the kernel client differs');
    } finally {
      spawnSync('nbd-client', ['-d', '/dev/nbd0'], { stdio: 'ignore' });
    }
    await served.stop();
    const check = spawnSync('qemu-img', ['check', image], { encoding: 'utf8' });
    assert.equal(check.status, 0, check.stdout + check.stderr);
  } finally {
    await served.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
