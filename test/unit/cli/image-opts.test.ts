import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FormatTable } from '../../../src/block/index.js';
import type { Engine } from '../../../src/cli/context.js';
import { parseImageOptions } from '../../../src/cli/image-opts.js';
import { openSettings } from '../../../src/cli/open-settings.js';
import { run } from '../../../src/cli/program.js';
import { cacheSizes, type EngineOpenOptions, tunedFormats } from '../../../src/cli/qcow2-tuning.js';
import type { FormatInfo } from '../../../src/formats/driver.js';
import type { DriverOpenOptions, FormatModule } from '../../../src/formats/registry-types.js';
import { FakeDriver } from '../block/fake-driver.js';

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
  assert.equal(message('file.filename=a,file.driver=nbd'), "vdisk opens images through the 'file' protocol driver only, not 'nbd'");
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
  assert.match(cacheOf([['cache.direct', 'on'], ['cache.no-flush', 'on']]) ?? '', /^error: vdisk has no cache mode with both/);
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

test('cache-size is split between the L2 and refcount caches as qcow2 does, the L2 cache no larger than the disk needs', () => {
  const geometry = { clusterSize: 65536, virtualSize: 1 << 30, extendedL2: false, compat: '1.1', lazyRefcounts: false };
  // 1 GiB in 64 KiB clusters: 16384 entries of 8 bytes, two tables map it all.
  assert.deepEqual(cacheSizes({ cacheSize: 1 << 20 }, geometry), { l2CacheSize: 131072, refcountCacheSize: (1 << 20) - 131072 });
  assert.deepEqual(cacheSizes({ cacheSize: 300000 }, geometry), { l2CacheSize: 300000 - 262144, refcountCacheSize: 262144 });
  assert.deepEqual(cacheSizes({ cacheSize: 1 << 20, l2CacheSize: 65536 }, geometry), { l2CacheSize: 65536, refcountCacheSize: (1 << 20) - 65536 });
  assert.deepEqual(cacheSizes({ cacheSize: 1 << 20, refcountCacheSize: 65536 }, geometry), { l2CacheSize: (1 << 20) - 65536, refcountCacheSize: 65536 });
  assert.deepEqual(cacheSizes({ cacheSize: 1 << 22 }, { ...geometry, extendedL2: true }), { l2CacheSize: 262144, refcountCacheSize: (1 << 22) - 262144 });
  assert.deepEqual(cacheSizes({ l2CacheSize: 4096, refcountCacheSize: 8192 }, undefined), { l2CacheSize: 4096, refcountCacheSize: 8192 });
});

/** A format table whose qcow2 module records how it was asked to open each file. */
function recordingFormats(info: Partial<FormatInfo> = {}): { formats: FormatTable; opens: Array<{ path: string; options: DriverOpenOptions }> } {
  const opens: Array<{ path: string; options: DriverOpenOptions }> = [];
  class InfoDriver extends FakeDriver {
    override async info(): Promise<FormatInfo> {
      return { ...(await super.info()), ...info };
    }
  }
  const module: FormatModule = {
    name: 'qcow2',
    probe: () => true,
    create: () => Promise.resolve(),
    open: (path, options) => {
      opens.push({ path, options });
      return Promise.resolve(new InfoDriver({ filename: path, length: 1 << 30, cluster: 65536, readOnly: options.readOnly }));
    },
  };
  return { formats: { probe: () => 'qcow2', byName: () => module }, opens };
}

test('the top qcow2 image is opened with the cache sizes given, its backing files with their defaults', async () => {
  const { formats, opens } = recordingFormats();
  const tuned = tunedFormats('top.qcow2', new Map([['l2-cache-size', '2M'], ['refcount-cache-size', '256k']]), formats);
  await (await tuned.byName('qcow2').open('top.qcow2', { readOnly: false })).close();
  await (await tuned.byName('qcow2').open('base.qcow2', { readOnly: true })).close();
  assert.deepEqual(opens, [
    { path: 'top.qcow2', options: { readOnly: false, l2CacheSize: 2 << 20, refcountCacheSize: 256 << 10 } },
    { path: 'base.qcow2', options: { readOnly: true } },
  ]);
});

test('cache-size looks at the image read-only first, then opens it with the split', async () => {
  const { formats, opens } = recordingFormats({ formatSpecific: { type: 'qcow2', data: { compat: '1.1', 'lazy-refcounts': false } } });
  const tuned = tunedFormats('top.qcow2', new Map([['cache-size', '1M']]), formats);
  await (await tuned.byName('qcow2').open('top.qcow2', { readOnly: false })).close();
  assert.deepEqual(opens, [
    { path: 'top.qcow2', options: { readOnly: true, noRepair: true } },
    { path: 'top.qcow2', options: { readOnly: false, l2CacheSize: 131072, refcountCacheSize: (1 << 20) - 131072 } },
  ]);
});

test('qcow2 options that need the image are checked against it; what vdisk cannot apply is refused', async () => {
  const refusal = async (pairs: Array<[string, string]>, readOnly: boolean, data: { [key: string]: string | boolean } = { compat: '1.1', 'lazy-refcounts': false }): Promise<string> => {
    const { formats } = recordingFormats({ formatSpecific: { type: 'qcow2', data } });
    try {
      await (await tunedFormats('t.qcow2', new Map(pairs), formats).byName('qcow2').open('t.qcow2', { readOnly })).close();
      return 'opened';
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  };
  assert.equal(await refusal([['l2-cache-entry-size', '4k']], false), 'opened');
  assert.equal(await refusal([['l2-cache-entry-size', '100']], true), 'L2 cache entry size must be a power of two between 512 and the cluster size (65536)');
  assert.equal(await refusal([['lazy-refcounts', 'on']], true, { compat: '0.10' }), 'Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level');
  // Reading is the same either way; writing would follow the image's bit, so a different one is refused.
  assert.equal(await refusal([['lazy-refcounts', 'on']], true), 'opened');
  assert.equal(await refusal([['lazy-refcounts', 'off']], false), 'opened');
  assert.match(await refusal([['lazy-refcounts', 'on']], false), /cannot change it at open: use 'vdisk amend -o lazy_refcounts=on'/);
  assert.equal(await refusal([['cache-size', '1M'], ['l2-cache-size', '1M'], ['refcount-cache-size', '1M']], true), 'cache-size, l2-cache-size and refcount-cache-size may not be set at the same time');
  assert.equal(await refusal([['cache-size', '1M'], ['refcount-cache-size', '2M']], true), 'refcount-cache-size may not exceed cache-size');
  assert.match(await refusal([['l2-cache-size', '-1']], true), /^Parameter 'l2-cache-size' expects a non-negative number below 2\^64\n/);
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
