import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RateLimit } from '../../../src/jobs/rate-limit.js';

test('unlimited speed never asks to wait', () => {
  const r = new RateLimit(0);
  assert.equal(r.account(1 << 30, 0), 0);
});

test('work within a slice quota does not wait; beyond it waits proportionally', () => {
  const r = new RateLimit(1_000_000); // 100 000 bytes per 100 ms slice
  assert.equal(r.account(50_000, 1000), 0);
  assert.equal(r.account(50_000, 1010), 0);
  // 300 000 bytes since t=1000 are paid for at t=1300; one slice may run ahead → wait until t=1200.
  assert.equal(r.account(200_000, 1020), 180);
});

test('average throughput over many chunks matches the speed', () => {
  const speed = 4_000_000;
  const r = new RateLimit(speed);
  let now = 0;
  const chunk = 1 << 20;
  for (let i = 0; i < 40; i++) now += r.account(chunk, now);
  // 40 MiB at 4 MB/s is about 10.5 s of simulated time.
  const expected = (40 * chunk * 1000) / speed;
  assert.ok(Math.abs(now - expected) / expected < 0.1, `simulated ${now} ms, expected about ${expected}`);
});

test('changing the speed takes effect at once', () => {
  const r = new RateLimit(1000);
  assert.ok(r.account(10_000, 0) > 0);
  r.speed = 0;
  assert.equal(r.account(10_000, 1), 0);
});
