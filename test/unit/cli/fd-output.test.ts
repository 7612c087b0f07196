import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fdWriter } from '../../../src/cli/fd-output.js';

test('output goes to the descriptor whole, multi-byte text included', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-fd-output-'));
  const file = path.join(dir, 'out');
  const fd = fs.openSync(file, 'w');
  try {
    const write = fdWriter(fd);
    write('first line\n');
    write('');
    write('déjà vu ✓\n'.repeat(10000));
  } finally {
    fs.closeSync(fd);
  }
  assert.equal(fs.readFileSync(file, 'utf8'), `first line\n${'déjà vu ✓\n'.repeat(10000)}`);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a descriptor that would block hands the rest and all later output to the stream, in order', () => {
  const written: number[] = [];
  const streamed: string[] = [];
  let calls = 0;
  const write = fdWriter(1, {
    writeSync: (_fd, bytes, offset, length) => {
      calls++;
      if (calls === 2) throw Object.assign(new Error('would block'), { code: 'EAGAIN' });
      const n = Math.min(length, 4);
      written.push(...bytes.subarray(offset, offset + n));
      return n;
    },
    stream: () => ({ write: (chunk: string | Uint8Array) => streamed.push(typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8')) }),
  });
  write('abcdefgh');
  write('ij');
  assert.equal(Buffer.from(written).toString('utf8'), 'abcd');
  assert.deepEqual(streamed, ['efgh', 'ij']);
  assert.equal(calls, 2, 'no write(2) once the stream took over');
});

test('other write errors are thrown', () => {
  const write = fdWriter(1, {
    writeSync: () => {
      throw Object.assign(new Error('no space'), { code: 'ENOSPC' });
    },
    stream: () => ({ write: () => assert.fail('not the stream') }),
  });
  assert.throws(() => write('x'), /no space/);
});

test('a reader that went away ends the output quietly (vdisk map ... | head)', async () => {
  const module = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../../src/cli/fd-output.js');
  const script = `import { fdWriter } from ${JSON.stringify(module)}; const w = fdWriter(1); for (let i = 0; i < 2000; i++) w('x'.repeat(1000) + '\\n'); process.stderr.write('done');`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.equal(code, 0);
  assert.equal(stderr, 'done');
});
