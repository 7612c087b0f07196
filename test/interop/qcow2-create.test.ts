import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createQcow2 } from '../../src/formats/qcow2/create.js';
import { isVdiskError } from '../../src/errors.js';
import { withDir } from '../support/temp-dir.js';

// [size, -o options]: vdisk's image must equal qemu-img's byte for byte.
const MATRIX: ReadonlyArray<readonly [number, string]> = [
  [0, ''],
  [1 << 20, ''],
  [1 << 30, ''],
  [1000, ''],
  [1 << 30, 'compat=0.10'],
  [1 << 30, 'compat=v2,cluster_size=512'],
  [100 << 20, 'cluster_size=512'],
  [1 << 30, 'cluster_size=2M'],
  [1 << 20, 'refcount_bits=1'],
  [1 << 20, 'refcount_bits=2'],
  [1 << 20, 'refcount_bits=4'],
  [1 << 20, 'refcount_bits=8'],
  [1 << 20, 'refcount_bits=32'],
  [1 << 20, 'refcount_bits=64'],
  [1 << 20, 'lazy_refcounts=on'],
  [1 << 30, 'extended_l2=on'],
  [1 << 30, 'extended_l2=on,cluster_size=16k'],
  [1 << 20, 'compression_type=zstd'],
  [1 << 20, 'preallocation=metadata'],
  [100 << 20, 'preallocation=metadata'],
  [(64 << 20) + 512, 'preallocation=metadata,cluster_size=4096'],
  [1000000, 'preallocation=metadata'],
  [8 << 20, 'preallocation=metadata,cluster_size=512'],
  [8 << 20, 'preallocation=metadata,cluster_size=512,refcount_bits=1'],
  [8 << 20, 'preallocation=metadata,cluster_size=1024,refcount_bits=64'],
  [100 << 20, 'preallocation=metadata,cluster_size=2M'],
  [10 << 20, 'preallocation=falloc'],
  [10 << 20, 'preallocation=full'],
  [8 << 20, 'preallocation=falloc,cluster_size=512'],
  [256 << 20, 'preallocation=falloc,extended_l2=on'],
  [1 << 20, 'preallocation=metadata,extended_l2=on'],
];

function parseOpts(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of text.split(',').filter((s) => s !== '')) {
    const [k, v] = kv.split('=');
    out[k ?? ''] = v ?? '';
  }
  return out;
}

test('createQcow2 writes the same bytes as qemu-img create for every option combination', withDir(async (dir) => {
  for (const [size, opts] of MATRIX) {
    const q = `${dir}/q.qcow2`;
    const v = `${dir}/v.qcow2`;
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...(opts ? ['-o', opts] : []), q, String(size)]);
    await createQcow2(v, { size, options: parseOpts(opts) });
    assert.equal(fs.statSync(v).size, fs.statSync(q).size, `file size for ${size} ${opts}`);
    execFileSync('cmp', [q, v]);
    fs.rmSync(q);
    fs.rmSync(v);
  }
}));

test('backing files and external data files are recorded as qemu-img records them', withDir(async (dir) => {
  const base = `${dir}/base.qcow2`;
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', base, '1G']);
  const cases: ReadonlyArray<readonly [string, Record<string, string>, { backingFile?: string; backingFormat?: 'qcow2' }]> = [
    ['-b base.qcow2 -F qcow2', {}, { backingFile: 'base.qcow2', backingFormat: 'qcow2' }],
    ['-b base.qcow2 -F qcow2 -o compat=0.10', { compat: '0.10' }, { backingFile: 'base.qcow2', backingFormat: 'qcow2' }],
    ['-b base.qcow2 -F qcow2 -o cluster_size=512', { cluster_size: '512' }, { backingFile: 'base.qcow2', backingFormat: 'qcow2' }],
    ['-o data_file=d.raw', { data_file: 'd.raw' }, {}],
    ['-o data_file=d.raw,data_file_raw=on', { data_file: 'd.raw', data_file_raw: 'on' }, {}],
    ['-o data_file=d.raw,preallocation=full', { data_file: 'd.raw', preallocation: 'full' }, {}],
  ];
  for (const [args, options, backing] of cases) {
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...args.split(' '), 'q.qcow2', '1G'], { cwd: dir });
    const qData = fs.existsSync(`${dir}/d.raw`) ? fs.statSync(`${dir}/d.raw`).size : null;
    fs.rmSync(`${dir}/d.raw`, { force: true });
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      await createQcow2('v.qcow2', { size: 1 << 30, options, ...backing });
    } finally {
      process.chdir(cwd);
    }
    execFileSync('cmp', [`${dir}/q.qcow2`, `${dir}/v.qcow2`]);
    if (qData !== null) assert.equal(fs.statSync(`${dir}/d.raw`).size, qData);
    fs.rmSync(`${dir}/d.raw`, { force: true });
  }
}));

test('invalid create options are refused with qemu-img wording', async () => {
  const bad: ReadonlyArray<readonly [Record<string, string>, string]> = [
    [{ cluster_size: '1000' }, 'Cluster size must be a power of two between 512 and 2048k'],
    [{ cluster_size: '4M' }, 'Cluster size must be a power of two between 512 and 2048k'],
    [{ refcount_bits: '3' }, 'Refcount width must be a power of two and may not exceed 64 bits'],
    [{ refcount_bits: '128' }, 'Refcount width must be a power of two and may not exceed 64 bits'],
    [{ compat: '0.10', lazy_refcounts: 'on' }, 'Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)'],
    [{ extended_l2: 'on', cluster_size: '4k' }, 'Extended L2 entries are only supported with cluster sizes of at least 16384 bytes'],
    [{ compat: 'foo' }, "Parameter 'version' does not accept value 'foo'"],
    [{ preallocation: 'bogus' }, "Parameter 'preallocation' does not accept value 'bogus'"],
    [{ data_file_raw: 'on' }, 'data-file-raw requires data-file'],
    [{ compat: '0.10', refcount_bits: '1' }, 'Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)'],
    [{ compression_type: 'zstd', compat: '0.10' }, 'Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)'],
    [{ bogus: '1' }, "Invalid parameter 'bogus'"],
  ];
  for (const [options, message] of bad) {
    await assert.rejects(createQcow2('/nonexistent/never-created.qcow2', { size: 1 << 20, options }), (e) => isVdiskError(e, 'EINVAL') && e.message === message);
  }
});
