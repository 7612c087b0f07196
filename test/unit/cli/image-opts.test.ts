import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openImageWith, type FormatTable } from '../../../src/block/index.js';
import type { Engine } from '../../../src/cli/context.js';
import { parseImageOptions } from '../../../src/cli/image-opts.js';
import { openSettings } from '../../../src/cli/open-settings.js';
import { run } from '../../../src/cli/program.js';
import { type EngineOpenOptions, parseTuning } from '../../../src/cli/qcow2-tuning.js';
import type { DriverOpenOptions, FormatModule } from '../../../src/formats/registry-types.js';
import { FakeDriver } from '../block/fake-driver.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const NO_OPTIONS = { values: new Map<string, string>(), warnings: [] };

test('an --image-opts string gives the file, the format and the format layer options', () => {
  const r = parseImageOptions('driver=qcow2,file.driver=file,file.filename=a,,b.qcow2,l2-cache-size=1M,file.cache.direct=on', { impliedFile: true });
  assert.ok(r.ok);
  assert.equal(r.filename, 'a,b.qcow2');
  assert.equal(r.format, 'qcow2');
  assert.deepEqual([...r.options.values], [['driver', 'qcow2'], ['l2-cache-size', '1M']]);
  assert.deepEqual(r.protocol, { cacheDirect: 'on' });
  const parallels = parseImageOptions('driver=parallels,file.filename=d.hds', { impliedFile: true });
  assert.ok(parallels.ok);
  assert.equal(parallels.format, 'ploop');
});

test('an --image-opts string that names no image vdisk opens is refused with QEMU words', () => {
  const message = (text: string, impliedFile = true): string => {
    const r = parseImageOptions(text, { impliedFile });
    return r.ok ? 'ok' : r.message;
  };
  assert.equal(message('filename=a.qcow2'), 'Must specify either driver or file');
  assert.equal(message('driver=qcow2'), 'A block device must be specified for "file"');
  assert.equal(message('driver=bogus,file.filename=a'), "Unknown driver 'bogus'");
  assert.equal(message('driver=vmdk,file.filename=a'), "Driver 'vmdk' is not supported by vdisk");
  // qemu-img implies `file` for a first item without '=': a node reference vdisk has none of.
  assert.equal(message('a.qcow2'), "Cannot find device='a.qcow2' nor node-name='a.qcow2'");
  assert.equal(message('file=x,file.filename=a'), 'Cannot reference an existing block device with additional options or a new filename');
  assert.equal(message('driver=qcow2,file.filename='), "The 'file' block driver requires a file name");
  assert.equal(message('file.filename=a,file.bogus=1'), "Block protocol 'file' doesn't support the option 'bogus'");
  assert.equal(message('file.filename=a,file.driver=nbd'), "vdisk opens images through the 'file' and 'host_device' protocol drivers only, not 'nbd'");
  // Named, the file driver must fit the file (QEMU's file-posix.c); /dev/null is a character device.
  assert.equal(message('file.filename=/dev/null,file.driver=file'), "'file' driver requires '/dev/null' to be a regular file");
  assert.equal(message(`file.filename=${process.execPath},file.driver=host_device`), `'host_device' driver requires '${process.execPath}' to be either a character or block device`);
  assert.equal(message('driver=raw,file.filename=/dev/null,file.driver=host_device'), 'ok');
  assert.equal(message('driver=raw,file.filename=/dev/null'), 'ok');
  assert.match(message('file.filename=a,file.locking=off'), /file\.locking=off is not supported/);
  assert.equal(message('file.filename=a,file.aio=native'), "vdisk does not support the option 'file.aio'");
  // qemu-io implies nothing: a bare first item is a short-form boolean.
  const bare = parseImageOptions('a.qcow2', { impliedFile: false });
  assert.deepEqual(bare, { ok: false, message: 'Must specify either driver or file', warnings: ["warning: short-form boolean option 'a.qcow2' deprecated\nPlease use a.qcow2=on instead"] });
});

test('cache.direct and cache.no-flush override the cache mode of -t, the file layer nearest the file', () => {
  const cacheOf = (pairs: Array<[string, string]>, base?: 'writeback' | 'none' | 'unsafe' | 'directsync', protocol = {}): string | undefined => {
    const r = openSettings({ values: new Map(pairs), warnings: [] }, protocol, { readOnly: true, cache: base });
    return r.ok ? r.settings.cache : `error: ${r.message}`;
  };
  assert.equal(cacheOf([]), undefined);
  assert.equal(cacheOf([], 'unsafe'), 'unsafe');
  assert.equal(cacheOf([['cache.direct', 'on']]), 'none');
  assert.equal(cacheOf([['cache.direct', 'off']], 'none'), 'writeback');
  assert.equal(cacheOf([['cache.no-flush', 'on']]), 'unsafe');
  assert.equal(cacheOf([['cache.direct', 'on']], 'directsync'), 'directsync');
  assert.equal(cacheOf([['cache.direct', 'off']], 'none', { cacheDirect: 'on' }), 'none');
  assert.equal(cacheOf([['cache.direct', 'maybe']]), "error: Parameter 'cache.direct' expects 'on' or 'off'");
  // O_DIRECT with flushes that do nothing, which -t has no name for; with no-flush, writethrough's flushes do nothing either.
  assert.equal(cacheOf([['cache.direct', 'on'], ['cache.no-flush', 'on']]), 'none-unsafe');
  assert.equal(cacheOf([['cache.no-flush', 'on']], 'directsync'), 'none-unsafe');
  assert.equal(cacheOf([['cache.direct', 'off'], ['cache.no-flush', 'on']], 'directsync'), 'unsafe');
});

test('read-only, force-share and backing="" in the string decide how the image is opened', () => {
  const settle = (pairs: Array<[string, string]>, readOnly: boolean): ReturnType<typeof openSettings> =>
    openSettings({ values: new Map(pairs), warnings: [] }, {}, { readOnly });
  assert.deepEqual(settle([['read-only', 'on']], false), { ok: false, message: 'Block node is read-only' });
  assert.deepEqual(settle([['force-share', 'on']], false), { ok: false, message: 'force-share=on can only be used with read-only images' });
  assert.deepEqual(settle([['read-only', 'maybe']], true), { ok: false, message: "Parameter 'read-only' expects 'on' or 'off'" });
  const r = settle([['force-share', 'on'], ['backing', ''], ['l2-cache-size', '1M'], ['overlap-check', 'none']], true);
  assert.ok(r.ok);
  assert.deepEqual(r.settings, { readOnly: true, forceShare: true, noBacking: true, qcow2Options: new Map([['l2-cache-size', '1M']]) });
  assert.deepEqual(r.warnings, ['warning: Use of "backing": "" is deprecated; use "backing": null instead']);
  assert.ok(openSettings(NO_OPTIONS, {}, { readOnly: false }).ok);
});

/** A format table whose qcow2 module records how it was asked to open each file; `top.qcow2` names `base.qcow2` as its backing. */
function recordingFormats(): { formats: FormatTable; opens: Array<{ path: string; options: DriverOpenOptions }> } {
  const opens: Array<{ path: string; options: DriverOpenOptions }> = [];
  const module: FormatModule = {
    name: 'qcow2',
    probe: () => true,
    create: () => Promise.resolve(),
    open: (file, options) => {
      opens.push({ path: path.basename(file), options });
      const backingRef = path.basename(file) === 'top.qcow2' ? { filename: 'base.qcow2', format: 'qcow2' as const } : null;
      return Promise.resolve(new FakeDriver({ filename: file, length: 1 << 30, cluster: 65536, readOnly: options.readOnly, backingRef }));
    },
  };
  return { formats: { probe: () => 'qcow2', byName: () => module }, opens };
}

test('the top image is opened with the qcow2 options given, its backing files with their defaults', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-tuning-'));
  for (const name of ['top.qcow2', 'base.qcow2']) fs.writeFileSync(path.join(dir, name), '');
  try {
    const { formats, opens } = recordingFormats();
    const tuning = parseTuning('top.qcow2', new Map([['l2-cache-size', '2M'], ['refcount-cache-size', '256k']]));
    await (await openImageWith(path.join(dir, 'top.qcow2'), { readOnly: false, qcow2Tuning: tuning }, formats)).close();
    assert.deepEqual(opens, [
      { path: 'top.qcow2', options: { readOnly: false, qcow2Tuning: { l2CacheSize: 2 << 20, refcountCacheSize: 256 << 10 } } },
      { path: 'base.qcow2', options: { readOnly: true } },
    ]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('qcow2 option values are parsed and checked against each other before the image is opened', () => {
  const refusal = (pairs: Array<[string, string]>): string => {
    try {
      parseTuning('t.qcow2', new Map(pairs));
      return 'parsed';
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  };
  assert.deepEqual(parseTuning('t.qcow2', new Map([['cache-size', '1M'], ['l2-cache-entry-size', '4k'], ['lazy-refcounts', 'on']])), {
    cacheSize: 1 << 20,
    l2CacheEntrySize: 4096,
    lazyRefcounts: true,
  });
  assert.equal(refusal([['cache-size', '1M'], ['l2-cache-size', '1M'], ['refcount-cache-size', '1M']]), 'cache-size, l2-cache-size and refcount-cache-size may not be set at the same time');
  assert.equal(refusal([['cache-size', '1M'], ['refcount-cache-size', '2M']]), 'refcount-cache-size may not exceed cache-size');
  assert.match(refusal([['l2-cache-size', '-1']]), /^Parameter 'l2-cache-size' expects a non-negative number below 2\^64\n/);
  assert.equal(refusal([['lazy-refcounts', 'maybe']]), "Parameter 'lazy-refcounts' expects 'on' or 'off'");
});

/** An engine that records each open and fails it (the commands stop there). */
function recordingEngine(): { engine: Engine; calls: Array<{ path: string; options: EngineOpenOptions }> } {
  const calls: Array<{ path: string; options: EngineOpenOptions }> = [];
  const engine: Engine = {
    openImage: (path, options) => {
      calls.push({ path, options });
      return Promise.reject(new Error('stop here'));
    },
    createImage: () => Promise.reject(new Error('not used')),
  };
  return { engine, calls };
}

test('qemu-img commands hand the engine what --image-opts says, and refuse it with -f', async () => {
  const { engine, calls } = recordingEngine();
  let stderr = '';
  const out = { stdout: () => undefined, stderr: (t: string) => void (stderr += t) };
  await run(['map', '--image-opts', 'driver=qcow2,file.filename=a.qcow2,cache.direct=on,l2-cache-size=4M,backing='], { engine, out });
  await run(['resize', '--image-opts', 'file.filename=r.img,cache.no-flush=on', '+1M'], { engine, out });
  assert.deepEqual(
    calls.map((c) => ({ path: c.path, format: c.options.format, readOnly: c.options.readOnly, cache: c.options.cache, noBacking: c.options.noBacking, qcow2: c.options.qcow2Options })),
    [
      { path: 'a.qcow2', format: 'qcow2', readOnly: true, cache: 'none', noBacking: true, qcow2: new Map([['l2-cache-size', '4M']]) },
      { path: 'r.img', format: undefined, readOnly: false, cache: 'unsafe', noBacking: undefined, qcow2: undefined },
    ],
  );
  stderr = '';
  assert.equal(await run(['info', '--image-opts', '-f', 'qcow2', 'driver=qcow2,file.filename=a.qcow2'], { engine, out }), 1);
  assert.equal(stderr, 'vdisk: --image-opts and --format are mutually exclusive\n');
  assert.equal(calls.length, 2);
});

test('vdisk io passes -o and --image-opts driver options to the engine, qcow2 caches included', async () => {
  const { engine, calls } = recordingEngine();
  const out = { stdout: () => undefined, stderr: () => undefined };
  await run(['io', '--image-opts', '-c', 'length', 'driver=qcow2,file.filename=a.qcow2,l2-cache-size=1M,cache-size=2M,cache.no-flush=on'], { engine, out });
  await run(['io', '-c', 'open -r -o driver=qcow2,refcount-cache-size=64k,lazy-refcounts=on,backing= b.qcow2'], { engine, out });
  assert.deepEqual(
    calls.map((c) => ({ path: c.path, readOnly: c.options.readOnly, cache: c.options.cache, noBacking: c.options.noBacking, qcow2: c.options.qcow2Options })),
    [
      { path: 'a.qcow2', readOnly: false, cache: 'unsafe', noBacking: undefined, qcow2: new Map([['l2-cache-size', '1M'], ['cache-size', '2M']]) },
      { path: 'b.qcow2', readOnly: true, cache: undefined, noBacking: true, qcow2: new Map([['refcount-cache-size', '64k'], ['lazy-refcounts', 'on']]) },
    ],
  );
});
