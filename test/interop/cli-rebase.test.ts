import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

/** base <- mid <- top, each with data of its own, plus a copy of top for each tool. */
function chain(dir: string): void {
  const run = (tool: 'qemu-img' | 'qemu-io', args: string[]): void => {
    const r = qemu(tool, dir, args);
    assert.equal(r.status, 0, `${tool} ${args.join(' ')}: ${r.stderr}`);
  };
  run('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '4M']);
  run('qemu-io', ['-c', 'write -P 1 0 1M', '-c', 'write -P 2 2M 64k', 'base.qcow2']);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2']);
  run('qemu-io', ['-c', 'write -P 3 512k 1k', '-c', 'write -z 2M 4k', '-c', 'write -P 4 3M 64k', 'mid.qcow2']);
  for (const top of ['q.qcow2', 'v.qcow2', 'orig.qcow2']) {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', top]);
    run('qemu-io', ['-c', 'write -P 5 3M 4k', top]);
  }
}

function mapOf(dir: string, file: string): string {
  return qemu('qemu-img', dir, ['map', '--output=json', file]).stdout.replace(/, "offset": \d+/g, '');
}

test('safe rebase onto a lower image keeps the guest view and allocates what qemu-img allocates', async () => {
  const t = tempDir();
  try {
    chain(t.dir);
    for (const extra of [['-b', 'base.qcow2', '-F', 'qcow2'], ['-b', '']]) {
      const q = qemu('qemu-img', t.dir, ['rebase', ...extra, 'q.qcow2']);
      const v = await vdisk(t.dir, ['rebase', ...extra, 'v.qcow2']);
      assert.deepEqual(normalised(v), normalised(q), extra.join(' '));
      assert.equal(qemu('qemu-img', t.dir, ['compare', 'orig.qcow2', 'v.qcow2']).status, 0, 'guest view unchanged');
      assert.equal(mapOf(t.dir, 'v.qcow2'), mapOf(t.dir, 'q.qcow2'));
      const info = (f: string): string => qemu('qemu-img', t.dir, ['info', '--output=json', f]).stdout.replace(/"(actual-size|filename)": [^,\n]+/g, '');
      assert.equal(info('v.qcow2'), info('q.qcow2'));
      assert.equal(qemu('qemu-img', t.dir, ['check', 'v.qcow2']).status, 0);
    }
  } finally {
    t.cleanup();
  }
});

test('unsafe rebase only rewrites the backing reference; errors match qemu-img', async () => {
  const t = tempDir();
  try {
    chain(t.dir);
    for (const argv of [
      ['rebase', '-u', '-b', 'base.qcow2', '-F', 'qcow2', 'X'],
      ['rebase', '-u', '-b', 'nowhere.qcow2', '-F', 'qcow2', 'X'],
      ['rebase', '-u', '-b', 'mid.qcow2', 'X'],
      ['rebase', 'X'],
      ['rebase', '-b', 'mid.qcow2', 'X', 'Y'],
    ]) {
      const q = normalised(qemu('qemu-img', t.dir, argv.map((a) => (a === 'X' ? 'q.qcow2' : a))));
      const v = normalised(await vdisk(t.dir, argv.map((a) => (a === 'X' ? 'v.qcow2' : a))));
      assert.deepEqual(v, { ...q, stderr: q.stderr.replaceAll('q.qcow2', 'v.qcow2') }, argv.join(' '));
      const backing = (f: string): string => qemu('qemu-img', t.dir, ['info', '-U', f]).stdout.split('\n').filter((l) => l.startsWith('backing')).join('\n');
      assert.equal(backing('v.qcow2'), backing('q.qcow2'), argv.join(' '));
    }
  } finally {
    t.cleanup();
  }
});
