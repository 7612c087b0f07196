// Runs the compiled tests with node:test. Node 20's `node --test` with no
// arguments finds nothing under dist/, so the files are listed here.
// Usage: node scripts/run-tests.mjs [suite...]   (suites: unit, interop, model, crash)
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = 'dist/test';
const suites = process.argv.slice(2);
const files = [];
function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
}
for (const s of suites.length ? suites : ['']) walk(join(root, s));
if (files.length === 0) {
  console.error('run-tests: no test files found under', root);
  process.exit(1);
}
const concurrency = process.env.VDISK_TEST_CONCURRENCY ?? '2';
// A test that hangs fails after this long instead of stalling CI (ms; the slowest test takes ~20 s).
const timeout = process.env.VDISK_TEST_TIMEOUT ?? '180000';
const r = spawnSync(
  process.execPath,
  ['--enable-source-maps', '--test', `--test-concurrency=${concurrency}`, `--test-timeout=${timeout}`, ...files],
  { stdio: 'inherit' },
);
process.exit(r.status ?? 1);
