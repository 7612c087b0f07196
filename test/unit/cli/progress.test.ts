import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseProgress, parseProgressMode, type ProgressStreams } from '../../../src/cli/format/progress.js';

function streams(terminal: { stdout: boolean; stderr: boolean }): ProgressStreams & { out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, stdout: (t) => void out.push(t), stderr: (t) => void err.push(t), stdoutIsTerminal: terminal.stdout, stderrIsTerminal: terminal.stderr };
}

/** A clock that advances 250 ms at every reading. */
function steppingClock(): () => number {
  let t = 0;
  return () => (t += 250);
}

test('--progress=json prints one JSON object per line on stderr with phase, done, total and elapsed', () => {
  const s = streams({ stdout: false, stderr: false });
  const p = chooseProgress({ p: false, quiet: false, mode: 'json' }, s, { phase: 'convert', now: steppingClock() });
  p.set(0);
  p.setTotal(1000);
  p.bytes(500, 1000);
  p.bytes(1000, 1000);
  p.end();
  assert.deepEqual(s.out, []);
  const lines = s.err.join('').split('\n');
  assert.equal(lines.pop(), '');
  assert.deepEqual(lines.map((l) => JSON.parse(l) as unknown), [
    { phase: 'convert', done: 0, total: 1000, elapsed: 0.25 },
    { phase: 'convert', done: 500, total: 1000, elapsed: 0.5 },
    { phase: 'convert', done: 1000, total: 1000, elapsed: 0.75 },
  ]);
});

test('JSON progress is not repeated for the same done and total, and -q does not silence an explicit --progress=json', () => {
  const s = streams({ stdout: false, stderr: false });
  const p = chooseProgress({ p: true, quiet: true, mode: 'json' }, s, { phase: 'commit', now: steppingClock() });
  p.bytes(1000, 1000);
  p.set(100);
  p.bytes(1000, 1000);
  assert.equal(s.err.length, 1);
  assert.deepEqual(s.out, []);
});

test('JSON progress follows percentages set without bytes once the total is known', () => {
  const s = streams({ stdout: false, stderr: false });
  const p = chooseProgress({ p: false, quiet: false, mode: 'json' }, s, { phase: 'compare', minStep: 2, now: steppingClock() });
  p.setTotal(200);
  p.add(50);
  p.add(50);
  assert.deepEqual(s.err.map((l) => (JSON.parse(l) as { done: number }).done), [0, 100, 200]);
});

test('-p with captured output prints exactly qemu-img text on stdout and nothing on stderr', () => {
  const s = streams({ stdout: false, stderr: false });
  const p = chooseProgress({ p: true, quiet: false, mode: undefined }, s, { phase: 'convert' });
  p.set(0);
  p.setTotal(100);
  p.bytes(50, 100);
  p.bytes(100, 100);
  p.end();
  assert.equal(s.out.join(''), '    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r\n');
  assert.deepEqual(s.err, []);
});

test('-p on a terminal with stderr redirected prints the text and also JSON lines on stderr', () => {
  const s = streams({ stdout: true, stderr: false });
  const p = chooseProgress({ p: true, quiet: false, mode: undefined }, s, { phase: 'rebase', now: steppingClock() });
  p.setTotal(10);
  p.bytes(10, 10);
  p.end();
  assert.equal(s.out.join(''), '    (100.00/100%)\r\n');
  assert.equal(s.err.length, 2);
});

test('-p with both streams on a terminal, and -q, print no JSON', () => {
  const both = streams({ stdout: true, stderr: true });
  chooseProgress({ p: true, quiet: false, mode: undefined }, both, { phase: 'convert' }).bytes(1, 1);
  assert.deepEqual(both.err, []);
  assert.equal(both.out.length, 1);
  const quiet = streams({ stdout: true, stderr: false });
  chooseProgress({ p: true, quiet: true, mode: undefined }, quiet, { phase: 'convert' }).bytes(1, 1);
  assert.deepEqual([quiet.out, quiet.err], [[], []]);
});

test('--progress takes text or json only; text is the same as -p', () => {
  assert.equal(parseProgressMode('json'), 'json');
  assert.equal(parseProgressMode('text'), 'text');
  assert.equal(parseProgressMode('JSON'), undefined);
  const s = streams({ stdout: false, stderr: false });
  chooseProgress({ p: false, quiet: false, mode: 'text' }, s, { phase: 'convert' }).set(0);
  assert.deepEqual(s.out, ['    (0.00/100%)\r']);
});
