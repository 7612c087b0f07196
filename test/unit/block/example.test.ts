import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

test('the library example in examples/basic.mjs runs and prints what it wrote', () => {
  const example = fileURLToPath(new URL('../../../../examples/basic.mjs', import.meta.url));
  const out = execFileSync(process.execPath, [example], { encoding: 'utf8' });
  assert.equal(out.split('\n')[0], 'hello, disk');
  assert.match(out, /^65536\+4096 data$/m);
});
