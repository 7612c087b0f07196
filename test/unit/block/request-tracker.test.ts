import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RequestTracker } from '../../../src/block/request-tracker.js';

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

test('lockRange waits for overlapping writes in flight and holds new ones until released', async () => {
  const t = new RequestTracker();
  const w = await t.begin(0, 100, true);
  let locked = false;
  const lockP = t.lockRange(50, 100).then((release) => {
    locked = true;
    return release;
  });
  await tick();
  assert.equal(locked, false);
  t.end(w);
  const release = await lockP;
  assert.equal(locked, true);
  let admitted = false;
  const w2 = t.begin(120, 10, true).then((tk) => {
    admitted = true;
    return tk;
  });
  const outside = await t.begin(500, 10, true);
  const read = await t.begin(120, 10, false);
  await tick();
  assert.equal(admitted, false, 'an overlapping write waits');
  release();
  t.end(await w2);
  t.end(outside);
  t.end(read);
  assert.equal(admitted, true);
});

test('quiesce waits for every request and holds new reads and writes', async () => {
  const t = new RequestTracker();
  const r = await t.begin(0, 10, false);
  let quiet = false;
  const q = t.quiesce().then((open) => {
    quiet = true;
    return open;
  });
  await tick();
  assert.equal(quiet, false);
  t.end(r);
  const open = await q;
  let admitted = false;
  const held = t.begin(0, 1, false).then((tk) => {
    admitted = true;
    return tk;
  });
  await tick();
  assert.equal(admitted, false);
  open();
  t.end(await held);
  assert.equal(admitted, true);
});
