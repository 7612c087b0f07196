import { test } from 'node:test';
import assert from 'node:assert/strict';
import { addSnapshot, dropMergedIntoChild, dropMergedTop, readDescriptorModel, serializeDescriptor } from '../../../../src/formats/ploop/descriptor-edit.js';
import { parseDescriptor } from '../../../../src/formats/ploop/descriptor.js';

const TOP = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
const A = '{11111111-1111-1111-1111-111111111111}';
const B = '{22222222-2222-2222-2222-222222222222}';
const ROOT = '{00000000-0000-0000-0000-000000000000}';

const XML = `<?xml version="1.0"?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters><Disk_size>8192</Disk_size><Cylinders>16</Cylinders><Heads>16</Heads><Sectors>32</Sectors></Disk_Parameters>
  <StorageData><Storage><Start>0</Start><End>8192</End><Blocksize>2048</Blocksize>
    <Image><GUID>${A}</GUID><Type>Compressed</Type><File>root.hds</File></Image>
    <Image><GUID>${B}</GUID><Type>Compressed</Type><File>mid &amp; co.hds</File></Image>
    <Image><GUID>${TOP}</GUID><Type>Compressed</Type><File>top.hds</File></Image>
  </Storage></StorageData>
  <Snapshots><TopGUID>${TOP}</TopGUID>
    <Shot><GUID>${A}</GUID><ParentGUID>${ROOT}</ParentGUID></Shot>
    <Shot><GUID>${B}</GUID><ParentGUID>${A}</ParentGUID></Shot>
    <Shot><GUID>${TOP}</GUID><ParentGUID>${B}</ParentGUID></Shot>
  </Snapshots>
</Parallels_disk_image>`;

const files = (xml: string): string[] => parseDescriptor(xml, 'd.xml').map((d) => d.file);

test('a descriptor written back parses to the same model and chain (names escaped)', () => {
  const m = readDescriptorModel(XML, 'd.xml');
  assert.equal(m.sizeSectors, 8192);
  assert.equal(m.blockSectors, 2048);
  const text = serializeDescriptor(m);
  assert.match(text, /<File>mid &amp; co.hds<\/File>/);
  assert.match(text, /<Sectors>32<\/Sectors>/);
  assert.deepEqual(readDescriptorModel(text, 'd.xml'), m);
  assert.deepEqual(files(text), ['root.hds', 'mid & co.hds', 'top.hds']);
});

test('snapshot: the old top keeps its file under a new GUID, the new delta is the top under TopGUID', () => {
  const m = readDescriptorModel(XML, 'd.xml');
  const snap = addSnapshot(m, 'new.hds');
  assert.match(snap, /^\{[0-9a-f-]{36}\}$/);
  assert.equal(m.topGuid, TOP);
  assert.deepEqual(m.images.find((i) => i.file === 'top.hds')?.guid, snap);
  assert.deepEqual(m.shots[m.shots.length - 1], { guid: TOP, parent: snap });
  assert.deepEqual(files(serializeDescriptor(m)), ['root.hds', 'mid & co.hds', 'top.hds', 'new.hds']);
});

test('backward merge record: the parent takes the top GUID, the top leaves', () => {
  const m = readDescriptorModel(XML, 'd.xml');
  assert.equal(dropMergedTop(m, 'd.xml'), 'top.hds');
  assert.equal(m.images.find((i) => i.file === 'mid & co.hds')?.guid, TOP);
  assert.deepEqual(files(serializeDescriptor(m)), ['root.hds', 'mid & co.hds']);
  dropMergedTop(m, 'd.xml');
  assert.throws(() => dropMergedTop(m, 'd.xml'), /no delta below it/);
});

test('forward merge record: the child takes the merged delta parent, the merged delta leaves', () => {
  const m = readDescriptorModel(XML, 'd.xml');
  assert.equal(dropMergedIntoChild(m, A, 'd.xml'), 'root.hds');
  assert.deepEqual(files(serializeDescriptor(m)), ['mid & co.hds', 'top.hds']);
  assert.throws(() => dropMergedIntoChild(m, TOP, 'd.xml'), /no delta above it/);
});

test('bad numbers in a descriptor are refused naming the field', () => {
  assert.throws(() => readDescriptorModel(XML.replace('<Disk_size>8192', '<Disk_size>lots'), 'd.xml'), /<Disk_size> is "lots"/);
});
