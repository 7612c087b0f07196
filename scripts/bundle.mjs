// After tsc: bundles the CLI into one CommonJS file, dist/vdisk-bundle.cjs, and
// makes V8's code caches of it, dist/vdisk-bundle.convert.cache and
// dist/vdisk-bundle.cache, by running a small convert into qcow2 and a compare
// through bin/vdisk.cjs (a cache then holds the functions that ran compiled
// too). See bin/vdisk.cjs for why.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const dist = resolve('dist');
const result = await build({
  entryPoints: [join(dist, 'src/cli/main.js')],
  outfile: join(dist, 'vdisk-bundle.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // The addon is found on disk at run time (see host/native.ts). Everything else is in the
  // bundle: an import() left in it would need a dynamic-import callback, which V8's code cache
  // drops. zstd's wasm is read from next to the bundle (its loader looks in its __dirname).
  external: ['*.node'],
  // import.meta.url (where the addon is looked for) is the bundle's own URL.
  define: { 'import.meta.url': '__vdiskBundleUrl' },
  // ASCII only, without comments or indentation (names are kept, for stack traces): the bin reads
  // the file as Latin-1 into a one-byte string, and reading and compiling cost by the byte.
  charset: 'ascii',
  minifyWhitespace: true,
  minifySyntax: true,
  logLevel: 'warning',
  write: false,
});
// main.js's '#!' line cannot stay inside a function.
const [bundled] = result.outputFiles;
const body = bundled.text.replace(/^#!.*\n/, '');
if (/[^\x00-\x7f]/.test(body)) throw new Error('scripts/bundle.mjs: the bundle is not ASCII (bin/vdisk.cjs reads it as Latin-1)');
if (/\bimport\(/.test(body)) throw new Error('scripts/bundle.mjs: an import() is left in the bundle');
// Stored wrapped as the function CommonJS would make of it (Node's Module.wrap), so that the bin
// compiles the file's text as it is: wrapping at run time made V8 flatten a 2 MB string.
// Strict mode first, as the ES modules it comes from are (a banner before esbuild's "use strict"
// would turn the directive into a plain string); then the bundle's own URL, for import.meta.url.
const prologue = `"use strict";const __vdiskBundleUrl=require('node:url').pathToFileURL(__filename).href;`;
writeFileSync(join(dist, 'vdisk-bundle.cjs'), `(function (exports, require, module, __filename, __dirname) {${prologue}${body}\n});`);
copyFileSync(resolve('node_modules/@bokuweb/zstd-wasm/dist/common/zstd.wasm'), join(dist, 'zstd.wasm'));

const work = mkdtempSync(join(tmpdir(), 'vdisk-cache-'));
try {
  const src = join(work, 's.raw');
  const data = Buffer.alloc(1024 * 1024);
  data.fill(7, 0, 65536);
  writeFileSync(src, data);
  // convert runs under its own V8 flags (see bin/vdisk.cjs), so it has its own cache; the other
  // commands' is made by a compare of the two images, which opens and reads both.
  const cacheRun = (out, args) =>
    execFileSync(process.execPath, [resolve('bin/vdisk.cjs'), ...args], { env: { ...process.env, VDISK_CODE_CACHE_OUT: join(dist, out) }, stdio: 'inherit' });
  cacheRun('vdisk-bundle.convert.cache', ['convert', '-f', 'raw', '-O', 'qcow2', src, join(work, 'd.qcow2')]);
  cacheRun('vdisk-bundle.cache', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', src, join(work, 'd.qcow2')]);
} finally {
  rmSync(work, { recursive: true, force: true });
}
