import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fastOrSlow } from '../../../src/util/fast-path.js';

test('the fast path is taken when it starts the request, the slow one otherwise', async () => {
  const taken: string[] = [];
  await fastOrSlow(
    () => (taken.push('fast'), Promise.resolve()),
    () => (taken.push('slow'), Promise.resolve()),
  );
  await fastOrSlow(
    () => (taken.push('check'), null),
    () => (taken.push('slow'), Promise.resolve()),
  );
  assert.deepEqual(taken, ['fast', 'check', 'slow']);
});

test('an error thrown by either path becomes a rejection, never a throw', async () => {
  const fromCheck = fastOrSlow(
    () => {
      throw new Error('corrupt entry');
    },
    () => Promise.resolve(),
  );
  await assert.rejects(fromCheck, /corrupt entry/);
  const fromSlow = fastOrSlow(
    () => null,
    () => {
      throw new Error('planning failed');
    },
  );
  await assert.rejects(fromSlow, /planning failed/);
});
