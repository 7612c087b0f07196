/**
 * vdisk serve --image-opts opens its operand as qemu-nbd --image-opts does:
 * the option string chooses driver, file, cache and qcow2 tuning; -r and
 * --cache are the command's request; the errors are qemu-nbd's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run, runStatus, startServer } from './support/serve-process.js';

const SERVE_MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'support/serve-main.js');

function tmp(): string {
  return fs.mkdtempSync(os.tmpdir() + '/vdisk-');
}

function makeQcow2(file: string): void {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', file, '64M']);
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 1M 64k', '-c', 'write -P 0x22 63M 1M', file]);
}

test('an image served with --image-opts (qcow2 options, cache.direct) reads as the file does, and takes writes', async () => {
  const dir = tmp();
  try {
    makeQcow2(`${dir}/a.qcow2`);
    const opts = `driver=qcow2,file.filename=${dir}/a.qcow2,l2-cache-size=1M,cache.direct=on`;
    const v = await startServer(['vdisk', '--image-opts', '-t', '-k', `${dir}/v.sock`, opts], `${dir}/v.sock`);
    try {
      assert.equal(run('nbdinfo', ['--size', v.uri]).trim(), String(64 << 20));
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 2M 64k', v.uri]);
      assert.equal(runStatus('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', '-U', v.uri, `${dir}/a.qcow2`]).status, 0);
      run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x33 2M 64k', '-c', 'read -P 0xab 1M 64k', v.uri]);
    } finally {
      assert.equal(await v.stop(), 0);
    }
    run('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x33 2M 64k', `${dir}/a.qcow2`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('-r wins over read-only=off in the option string, as with qemu-nbd: the export is read-only', async () => {
  const dir = tmp();
  try {
    makeQcow2(`${dir}/a.qcow2`);
    const opts = `driver=qcow2,file.filename=${dir}/a.qcow2,read-only=off`;
    // One after the other: qemu-nbd opens the node read-write here (only the export is read-only) and takes the write lock.
    for (const tool of ['vdisk', 'qemu-nbd']) {
      const s = await startServer([tool, '--image-opts', '-r', '-t', '-k', `${dir}/${tool}.sock`, opts], `${dir}/${tool}.sock`);
      try {
        // nbdinfo --can: 0 when it can, 2 when it cannot.
        assert.equal(runStatus('nbdinfo', ['--can', 'write', s.uri]).status, 2, tool);
      } finally {
        await s.stop();
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('option strings qemu-nbd refuses are refused with its messages', () => {
  const dir = tmp();
  try {
    makeQcow2(`${dir}/a.qcow2`);
    const file = `${dir}/a.qcow2`;
    const cases: string[][] = [
      ['-f', 'qcow2', `driver=qcow2,file.filename=${file}`],
      [`driver=qcow2,file.filename=${file},read-only=on`],
      [`driver=qcow2,file.filename=${dir}/missing.qcow2`],
      [`driver=qcow2,file.filename=${file},bogus=1`],
      [file],
    ];
    for (const args of cases) {
      const argv = ['--image-opts', '-k', `${dir}/s.sock`, ...args];
      const theirs = runStatus('qemu-nbd', argv);
      const ours = runStatus(process.execPath, [SERVE_MAIN, ...argv]);
      assert.equal(theirs.status, 1, args.join(' '));
      assert.equal(ours.status, 1, args.join(' '));
      assert.equal(ours.stderr.replace(/^vdisk serve: /gm, 'qemu-nbd: '), theirs.stderr, args.join(' '));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
