// ploop delta stacks (DiskDescriptor.xml) against QEMU's parallels driver with a runtime backing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { openImage } from '../../src/block/index.js';
import { createPloop, ploopFormat, parseDescriptor } from '../../src/formats/ploop/index.js';

function ok(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
}

function stackJson(top: string, base: string): string {
  return `json:${JSON.stringify({
    driver: 'parallels',
    file: { driver: 'file', filename: top },
    backing: { driver: 'parallels', file: { driver: 'file', filename: base } },
  })}`;
}

function descriptor(files: Array<{ guid: string; file: string }>, top: string | null): string {
  const images = files.map((f) => `<Image><GUID>${f.guid}</GUID><Type>Compressed</Type><File>${f.file}</File></Image>`).join('');
  const shots = files
    .map((f, i) => `<Shot><GUID>${f.guid}</GUID><ParentGUID>${i === 0 ? '{00000000-0000-0000-0000-000000000000}' : files[i - 1]?.guid}</ParentGUID></Shot>`)
    .join('');
  return `<?xml version="1.0"?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters><Disk_size>4096</Disk_size></Disk_Parameters>
  <StorageData><Storage><Start>0</Start><End>4096</End><Blocksize>128</Blocksize>${images}</Storage></StorageData>
  <Snapshots>${top ? `<TopGUID>${top}</TopGUID>` : ''}${shots}</Snapshots>
</Parallels_disk_image>`;
}

const BASE = '{11111111-1111-1111-1111-111111111111}';
const TOP = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';

test('a DiskDescriptor.xml stack reads through to the base and writes to the top with COW, as QEMU sees it', async () => {
  const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
  try {
    const base = join(dir, 'root.hds');
    const top = join(dir, 'root.hds.{5fbaabe3}');
    ok('qemu-img', ['create', '-q', '-f', 'parallels', '-o', 'cluster_size=64k', base, '2M']);
    ok('qemu-io', ['-f', 'parallels', '-c', 'write -P 0x5a 0 256k', base]);
    await createPloop(top, { size: 2 * 1024 * 1024, options: { cluster_size: '64k' } });
    const xml = join(dir, 'DiskDescriptor.xml');
    fs.writeFileSync(xml, descriptor([{ guid: BASE, file: 'root.hds' }, { guid: TOP, file: 'root.hds.{5fbaabe3}' }], null));
    const baseBefore = fs.readFileSync(base);

    assert.equal(ploopFormat.probe(fs.readFileSync(xml)), true);
    const disk = await openImage(xml, { readOnly: false });
    const head = new Uint8Array(4);
    await disk.read(0, head);
    assert.deepEqual(head, new Uint8Array([0x5a, 0x5a, 0x5a, 0x5a]));
    await disk.write(100 * 1024, new Uint8Array(10 * 1024).fill(0x11));
    await disk.close();

    assert.deepEqual(fs.readFileSync(base), baseBefore, 'the lower delta is untouched');
    ok('qemu-img', ['check', '-f', 'parallels', top]);
    const qemuRaw = join(dir, 'q.raw');
    ok('qemu-img', ['convert', '-O', 'raw', stackJson(top, base), qemuRaw]);
    const reopened = await openImage(xml, { readOnly: true });
    const all = new Uint8Array(reopened.length);
    await reopened.read(0, all);
    await reopened.close();
    assert.deepEqual(Buffer.from(all), fs.readFileSync(qemuRaw));
    assert.equal(all[100 * 1024], 0x11);
    assert.equal(all[99 * 1024], 0x5a, 'COW kept the base data around the write');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('descriptor parsing: TopGUID, default top GUID, cycles and missing images', () => {
  const two = [
    { guid: BASE, file: 'a' },
    { guid: '{22222222-2222-2222-2222-222222222222}', file: 'b' },
  ];
  assert.deepEqual(
    parseDescriptor(descriptor(two, '{22222222-2222-2222-2222-222222222222}'), 'd.xml').map((d) => d.file),
    ['a', 'b'],
  );
  assert.deepEqual(parseDescriptor(descriptor([{ guid: TOP, file: 'only' }], null), 'd.xml').map((d) => d.file), ['only']);
  assert.throws(() => parseDescriptor(descriptor(two, '{33333333-3333-3333-3333-333333333333}'), 'd.xml'), /names no <Image>/);
  const cyclic = descriptor(two, BASE).replace('{00000000-0000-0000-0000-000000000000}', '{22222222-2222-2222-2222-222222222222}');
  assert.throws(() => parseDescriptor(cyclic, 'd.xml'), /cycle/);
  assert.throws(() => parseDescriptor('<foo/>', 'd.xml'), /not a Parallels disk descriptor/);
});
