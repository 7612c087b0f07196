// A ploop stack opens as a chain of block nodes, one per delta, and maps like QEMU maps the same chain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openImage } from '../../src/block/index.js';
import { vdisk } from './cli-oracle.js';
import { buildStack, ok, qemuRead, stackJson, withDir } from './ploop-helpers.js';

const SIZE = 4 * 1024 * 1024;
const WRITES = [
  ['write -P 0x11 0 1M', 'write -P 0x12 3M 256k'],
  ['write -P 0x21 512k 1M', 'write -P 0x22 3136k 64k'],
  ['write -P 0x31 128k 64k', 'write -P 0x32 2M 192k'],
];

test(
  'a 3-delta descriptor stack is a 3-node chain whose map depths match qemu-img map of the same chain',
  withDir(async (dir) => {
    const { xml, files } = await buildStack(dir, SIZE, WRITES);
    const top = await openImage(xml, { readOnly: true });
    try {
      assert.deepEqual(
        top.chain().map((n) => n.filename),
        [...files].reverse(),
      );
      const all = new Uint8Array(top.length);
      await top.read(0, all);
      assert.deepEqual(Buffer.from(all), qemuRead(dir, files));
    } finally {
      await top.close();
    }
    const ours = await vdisk(dir, ['map', '--output=json', xml]);
    assert.equal(ours.status, 0, ours.stderr);
    const theirs = ok('qemu-img', ['map', '--output=json', stackJson(files)]);
    assert.deepEqual(JSON.parse(ours.stdout), JSON.parse(theirs));
  }),
);

test(
  'a delta stack whose cluster sizes differ is refused, naming the delta',
  withDir(async (dir) => {
    const { xml, files } = await buildStack(dir, SIZE, [[], []]);
    ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=128k', files[0] ?? '', String(SIZE)]);
    await assert.rejects(openImage(xml, { readOnly: true }), /cluster size 65536 differs from 131072/);
  }),
);
