import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openChain, qemuImg, qemuIo, qemuRaw, readAll, tmpDir } from './qcow2-helpers.js';

const PATTERN_OPS = ['write -P 0xab 0 64k', 'write -P 0x11 100k 3k', 'write -z 192k 64k', 'write -P 0x22 300k 128k', 'discard 320k 64k', 'write -z 400k 7k'];

async function assertSameAsQemu(file: string): Promise<void> {
  const chain = await openChain(file);
  try {
    const ours = await readAll(chain.top);
    const theirs = qemuRaw(file);
    assert.equal(ours.length, theirs.length);
    assert.ok(ours.equals(theirs), `content of ${path.basename(file)} differs from qemu-img convert`);
  } finally {
    await chain.close();
  }
}

for (const opts of [
  'compat=0.10',
  'compat=1.1',
  'cluster_size=512',
  'cluster_size=2M',
  'refcount_bits=1',
  'refcount_bits=64',
  'extended_l2=on,cluster_size=64k',
  'extended_l2=on,cluster_size=2M',
  'compression_type=zstd',
]) {
  test(`reads match qemu-img convert: ${opts}`, async () => {
    const dir = tmpDir();
    try {
      const f = path.join(dir, 'a.qcow2');
      qemuImg('create', '-f', 'qcow2', '-o', opts, f, '1000k');
      qemuIo(f, ...PATTERN_OPS);
      await assertSameAsQemu(f);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

for (const ctype of ['zlib', 'zstd']) {
  test(`compressed clusters (${ctype}) read as qemu-img convert -c wrote them`, async () => {
    const dir = tmpDir();
    try {
      const src = path.join(dir, 's.qcow2');
      const f = path.join(dir, 'c.qcow2');
      qemuImg('create', '-f', 'qcow2', src, '2M');
      qemuIo(src, 'write -P 0x5a 0 100k', 'write -P 0x33 512k 1M');
      // Make it less compressible so slots span sectors.
      qemuIo(src, 'write -P 0x01 1000k 1k', 'write -P 0x99 1001k 3k');
      qemuImg('convert', '-c', '-O', 'qcow2', '-o', `compression_type=${ctype},cluster_size=16k`, src, f);
      await assertSameAsQemu(f);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('backing chain: unallocated ranges read from the backing, zeros past its end', async () => {
  const dir = tmpDir();
  try {
    const base = path.join(dir, 'base.qcow2');
    const mid = path.join(dir, 'mid.qcow2');
    const top = path.join(dir, 'top.qcow2');
    qemuImg('create', '-f', 'qcow2', base, '512k');
    qemuIo(base, 'write -P 0x01 0 512k');
    qemuImg('create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', mid, '1M');
    qemuIo(mid, 'write -P 0x02 64k 64k', 'write -z 256k 64k');
    qemuImg('create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', '-o', 'extended_l2=on', top, '1M');
    qemuIo(top, 'write -P 0x03 70k 5k', 'discard 128k 64k');
    await assertSameAsQemu(top);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('virtual size not a multiple of the cluster size, and a 2 TiB sparse image', async () => {
  const dir = tmpDir();
  try {
    const f = path.join(dir, 'odd.qcow2');
    qemuImg('create', '-f', 'qcow2', f, '100001k');
    qemuIo(f, 'write -P 0x44 99999k 2k');
    await assertSameAsQemu(f);
    const big = path.join(dir, 'big.qcow2');
    qemuImg('create', '-f', 'qcow2', big, '2T');
    qemuIo(big, 'write -P 0x55 1T 64k', 'write -P 0x66 2047G 4k');
    const chain = await openChain(big);
    try {
      const buf = Buffer.alloc(65536);
      await chain.top.read(2 ** 40, buf);
      assert.ok(buf.every((b) => b === 0x55));
      const st = await chain.top.blockStatus(0, chain.top.length);
      assert.equal(st.filter((e) => e.data).length, 2);
      assert.equal(st.reduce((s, e) => s + e.length, 0), 2 ** 41);
    } finally {
      await chain.close();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('internal snapshot present: the active layer is read', async () => {
  const dir = tmpDir();
  try {
    const f = path.join(dir, 'snap.qcow2');
    qemuImg('create', '-f', 'qcow2', f, '1M');
    qemuIo(f, 'write -P 0x10 0 256k');
    qemuImg('snapshot', '-c', 's1', f);
    qemuIo(f, 'write -P 0x20 64k 64k');
    await assertSameAsQemu(f);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('external data file, with and without data_file_raw', async () => {
  for (const raw of ['off', 'on']) {
    const dir = tmpDir();
    try {
      const f = path.join(dir, 'x.qcow2');
      qemuImg('create', '-f', 'qcow2', '-o', `data_file=${path.join(dir, 'x.data')},data_file_raw=${raw}`, f, '1M');
      qemuIo(f, 'write -P 0x77 64k 100k', 'write -z 300k 64k');
      await assertSameAsQemu(f);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
});
