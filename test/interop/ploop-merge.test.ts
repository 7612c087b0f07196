// Snapshots and offline merges of ploop stacks through `vdisk ploop`, checked against a model
// (the stack's content before) and QEMU (qemu-img check and its reading of the resulting chain).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { basename, join } from 'node:path';
import { openImage } from '../../src/block/index.js';
import { descriptorChain } from '../../src/formats/ploop/index.js';
import { vdisk } from './cli-oracle.js';
import { buildStack, ok, qemuRead, TOP_GUID, withDir } from './ploop-helpers.js';

const SIZE = 4 * 1024 * 1024;
const WRITES = [
  ['write -P 0x11 0 1M', 'write -P 0x12 3M 256k'],
  ['write -P 0x21 512k 1M', 'write -P 0x22 3136k 64k'],
  ['write -P 0x31 128k 64k', 'write -P 0x32 2M 192k'],
];

async function readStack(xml: string): Promise<Buffer> {
  const top = await openImage(xml, { readOnly: true });
  try {
    const buf = new Uint8Array(top.length);
    await top.read(0, buf);
    return Buffer.from(buf);
  } finally {
    await top.close();
  }
}

async function chainFiles(xml: string): Promise<string[]> {
  return (await descriptorChain(xml)).map((d) => d.file);
}

test(
  'backward merge: the top delta goes into the one below; reads are unchanged, the descriptor and files follow, qemu agrees',
  withDir(async (dir) => {
    const { xml, files } = await buildStack(dir, SIZE, WRITES);
    const before = await readStack(xml);
    const r = await vdisk(dir, ['ploop', 'merge', xml]);
    assert.equal(r.status, 0, r.stderr);
    const after = await chainFiles(xml);
    assert.deepEqual(after, files.slice(0, 2));
    assert.equal(fs.existsSync(files[2] ?? ''), false, 'the merged top delta is deleted');
    assert.match(fs.readFileSync(xml, 'utf8'), new RegExp(`<TopGUID>${TOP_GUID.replace(/[{}]/g, '\\$&')}</TopGUID>`));
    assert.deepEqual(await readStack(xml), before);
    for (const f of after) ok('qemu-img', ['check', '-f', 'parallels', f]);
    assert.deepEqual(qemuRead(dir, after), before);
  }),
);

test(
  'forward merge at depth 1 and 2: a delta goes into the one above; reads are unchanged, qemu agrees',
  withDir(async (dir) => {
    const { xml, files } = await buildStack(dir, SIZE, [...WRITES, ['write -P 0x41 64k 64k']]);
    const before = await readStack(xml);
    let r = await vdisk(dir, ['ploop', 'merge', '--forward', '--depth', '2', xml]);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(await chainFiles(xml), [files[0], files[2], files[3]]);
    assert.equal(fs.existsSync(files[1] ?? ''), false);
    assert.deepEqual(await readStack(xml), before);
    r = await vdisk(dir, ['ploop', 'merge', '--forward', xml]);
    assert.equal(r.status, 0, r.stderr);
    const after = await chainFiles(xml);
    assert.deepEqual(after, [files[0], files[3]]);
    assert.deepEqual(await readStack(xml), before);
    for (const f of after) ok('qemu-img', ['check', '-f', 'parallels', f]);
    assert.deepEqual(qemuRead(dir, after), before);
  }),
);

test(
  'snapshot adds an empty top delta recorded as the ploop tools do; list shows it; writes land only in it',
  withDir(async (dir) => {
    const { xml, files } = await buildStack(dir, SIZE, WRITES.slice(0, 1));
    const before = await readStack(xml);
    const r = await vdisk(dir, ['ploop', 'snapshot', xml]);
    assert.equal(r.status, 0, r.stderr);
    const chain = await chainFiles(xml);
    assert.equal(chain.length, 2);
    assert.equal(chain[0], files[0]);
    const newTop = chain[1] ?? '';
    assert.match(basename(newTop), /^d0\.hds\.\{[0-9a-f-]{36}\}$/);
    const text = fs.readFileSync(xml, 'utf8');
    assert.match(text, /<Disk_size>8192<\/Disk_size>/);
    assert.match(text, /<Blocksize>128<\/Blocksize>/);
    assert.equal((text.match(/<Shot>/g) ?? []).length, 2);
    const list = await vdisk(dir, ['ploop', 'list', xml]);
    assert.equal(list.status, 0, list.stderr);
    const lines = list.stdout.trim().split('\n');
    assert.equal(lines.length, 3);
    assert.match(lines[2] ?? '', new RegExp(`\\* ${TOP_GUID.replace(/[{}]/g, '\\$&')}\\s+${basename(newTop).replace(/[{}.]/g, '\\$&')}$`));
    const base = fs.readFileSync(files[0] ?? '');
    const top = await openImage(xml);
    try {
      await top.write(4096, new Uint8Array(8192).fill(0x77));
    } finally {
      await top.close();
    }
    assert.deepEqual(fs.readFileSync(files[0] ?? ''), base, 'the snapshot (old top) is untouched');
    const expected = Buffer.from(before);
    expected.fill(0x77, 4096, 4096 + 8192);
    assert.deepEqual(await readStack(xml), expected);
    ok('qemu-img', ['check', '-f', 'parallels', newTop]);
    assert.deepEqual(qemuRead(dir, chain), expected);
    assert.ok(join(dir, basename(newTop)) === newTop);
  }),
);
