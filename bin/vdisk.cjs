#!/usr/bin/env node
/*
 * The installed `vdisk` command. It runs the CLI bundled into one CommonJS file
 * (dist/vdisk-bundle.cjs, made by scripts/bundle.mjs) through V8's code cache
 * (dist/vdisk-bundle.cache, made at build time), because start-up is a large
 * part of a short command: the ES-module tree (about 90 files) took 0.13 s to a
 * tiny convert, the bundle with its cache 0.08-0.09 s (`node -e 0`: 0.05 s).
 * The cache is only read here; V8 rejects it (and compiles as usual) when Node,
 * its flags or the bundle changed. Without a bundle, or with one older than
 * the last tsc run (a bare `tsc` does not remake it; `npm run build` does),
 * the module tree runs.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const { createRequire } = require('node:module');

const dist = path.join(__dirname, '..', 'dist');
const bundle = path.join(dist, 'vdisk-bundle.cjs');

function readOrNull(file, encoding) {
  try {
    return fs.readFileSync(file, encoding);
  } catch {
    return null;
  }
}

/** A tsc run after the last bundle (dist/.tsbuildinfo is newer): the bundle is stale, the module tree is not. */
function bundleIsStale() {
  try {
    return fs.statSync(path.join(dist, '.tsbuildinfo')).mtimeMs > fs.statSync(bundle).mtimeMs;
  } catch {
    return false;
  }
}

// V8 optimizes a function once it has run some amount of bytecode. A convert
// is short and moves much data: at the default (66 KiB on Node 20) its copy
// loops were compiled while they ran, 0.22 s of TurboFan on a 4 GiB convert,
// more than it gained; at eight times that, 0.06 s of CPU less and the copy
// 0.05 s sooner. Other commands keep the default: at eight times, `bench` at
// depth 1 ran twice as long (its request path stayed unoptimized). The flag is
// part of what a code cache must match, so convert has a cache of its own.
const convert = process.argv[2] === 'convert';
if (convert) require('node:v8').setFlagsFromString('--interrupt-budget=540672');

// ASCII (scripts/bundle.mjs checks it): read as Latin-1, it becomes a one-byte string without decoding.
const source = bundleIsStale() ? null : readOrNull(bundle, 'latin1');
if (source === null) {
  import(path.join(dist, 'src', 'cli', 'main.js'));
} else {
  // VDISK_CODE_CACHE_OUT (the build): write the cache this run leaves, functions it compiled included.
  const out = process.env.VDISK_CODE_CACHE_OUT;
  const cached = out ? null : readOrNull(path.join(dist, convert ? 'vdisk-bundle.convert.cache' : 'vdisk-bundle.cache'));
  // The file holds the CommonJS wrapper function already (see scripts/bundle.mjs).
  const script = new vm.Script(source, { filename: bundle, ...(cached ? { cachedData: cached } : {}) });
  if (out) process.once('exit', () => fs.writeFileSync(out, script.createCachedData()));
  const module = { exports: {} };
  script.runInThisContext()(module.exports, createRequire(bundle), module, bundle, dist);
}
