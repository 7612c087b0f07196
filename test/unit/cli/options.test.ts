import { test } from 'node:test';
import assert from 'node:assert/strict';
import { getopt } from '../../../src/cli/getopt.js';
import { formattingOptions, parseCreateOptions, parseQemuSize, splitOptionString } from '../../../src/cli/create-options.js';
import { isVdiskError } from '../../../src/errors.js';
import { run } from '../../../src/cli/program.js';
import type { Engine } from '../../../src/cli/context.js';

test('getopt permutes, clusters flags, takes attached and long arguments', () => {
  const r = getopt(['a.img', '-qUf', 'raw', '--output=json', '--out', 'human', '-o', 'x=1', '--', '-1'], {
    shortOptions: 'f:o:qU',
    longOptions: [{ name: 'output', hasArg: true, key: 'output' }],
  });
  assert.ok(r.ok);
  assert.deepEqual(r.operands, ['a.img', '-1']);
  assert.deepEqual(r.options.map((o) => `${o.key}=${o.value ?? ''}`), ['q=', 'U=', 'f=raw', 'output=json', 'output=human', 'o=x=1']);
});

test('getopt reports unknown options and missing arguments in qemu-img words', () => {
  assert.deepEqual(getopt(['-z'], { shortOptions: 'f:' }), { ok: false, options: [], message: "unrecognized option '-z'", shortDiagnostic: "invalid option -- 'z'" });
  assert.deepEqual(getopt(['--bogus'], { shortOptions: 'f:' }), { ok: false, options: [], message: "unrecognized option '--bogus'" });
  assert.deepEqual(getopt(['-f'], { shortOptions: 'f:' }), { ok: false, options: [], message: "missing argument for option '-f'", shortDiagnostic: "option requires an argument -- 'f'" });
});

test('a getopt failure keeps the options before the bad one, which glibc has already handed out', () => {
  const r = getopt(['-q', '-P', '5', '-y', '0', '1'], { shortOptions: 'qP:' });
  assert.equal(r.ok, false);
  assert.deepEqual(r.options, [{ key: 'q', value: undefined }, { key: 'P', value: '5' }]);
});

test('-o strings split on commas, ",," is a comma, a bare key is on', () => {
  assert.deepEqual(splitOptionString('a=1,b=x,,y,lazy'), [['a', '1'], ['b', 'x,y'], ['lazy', 'on']]);
});

test('parseQemuSize takes suffixes, fractions with a unit and hex', () => {
  assert.equal(parseQemuSize('1.5k'), 1536);
  assert.equal(parseQemuSize('0x1000'), 4096);
  assert.equal(parseQemuSize('64K'), 65536);
  assert.equal(parseQemuSize('1Q'), undefined);
  assert.equal(parseQemuSize('-1'), undefined);
});

test('the qcow2 Formatting options come in qemu-img order whatever order they were given in', () => {
  const given = parseCreateOptions('qcow2', ['refcount_bits=8,cluster_size=16k', 'compat=v3,lazy_refcounts=on']);
  given.set('size', { desc: { name: 'size', type: 'size', help: '' }, text: '5242880', value: '5242880' });
  assert.equal(
    formattingOptions('qcow2', given),
    'cluster_size=16384 extended_l2=off compression_type=zlib size=5242880 compat=v3 lazy_refcounts=on refcount_bits=8',
  );
});

test('bad -o values are refused with qemu-img texts', () => {
  assert.throws(() => parseCreateOptions('qcow2', ['foo=bar']), (e) => isVdiskError(e, 'EINVAL') && e.message === "Invalid parameter 'foo'");
  assert.throws(() => parseCreateOptions('qcow2', ['lazy_refcounts=maybe']), (e) => isVdiskError(e) && e.message === "Parameter 'lazy_refcounts' expects 'on' or 'off'");
});

test('create hands the engine the parsed options and prints the Formatting line first', async () => {
  const calls: unknown[] = [];
  const engine: Engine = {
    openImage: () => Promise.reject(new Error('not used')),
    createImage: (path, format, options) => {
      calls.push({ path, format, options });
      return Promise.resolve();
    },
  };
  let stdout = '';
  const status = await run(['create', '-f', 'qcow2', '-o', 'cluster_size=4k,lazy_refcounts=on', 'x.qcow2', '1M'], {
    engine,
    out: { stdout: (t) => void (stdout += t), stderr: () => undefined },
  });
  assert.equal(status, 0);
  assert.equal(stdout, "Formatting 'x.qcow2', fmt=qcow2 cluster_size=4096 extended_l2=off compression_type=zlib size=1048576 lazy_refcounts=on refcount_bits=16\n");
  assert.deepEqual(calls, [{ path: 'x.qcow2', format: 'qcow2', options: { size: 1048576, options: { cluster_size: '4096', lazy_refcounts: 'on' } } }]);
});
