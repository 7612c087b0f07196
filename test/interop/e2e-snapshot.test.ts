// blockdev-snapshot-sync on an exported disk through a real `vdisk serve --qmp`, with qemu-io writing over
// NBD before and after: the export switches to the new overlay, the old image is frozen at the snapshot,
// the errors read as qemu-storage-daemon's, and the live-backup round trip (snapshot, read the frozen
// image, commit the overlay back) ends with the image holding every write. A ploop stack's descriptor
// gains the new top delta.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { descriptorChain } from '../../src/formats/ploop/index.js';
import { buildStack, qemuRead } from './ploop-helpers.js';
import { withQsd } from './support/qsd.js';
import { run } from './support/serve-process.js';
import { addExportedImage, assertImageEquals, errorOf, GuestModel, MiB, ok, QemuIoSession, readImage, withDaemon } from './support/e2e-daemon.js';
import { withDir } from '../support/temp-dir.js';

const SIZE = 16 * MiB;


test('blockdev-snapshot-sync switches the export to a new qcow2 overlay; the old image keeps the disk as it was', withDir(async (dir) => {
  const base = `${dir}/base.qcow2`;
  const overlay = `${dir}/overlay.qcow2`;
  run('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
  const guest = new GuestModel(Buffer.alloc(SIZE), 5);
  await withDaemon(dir, async (d) => {
    await addExportedImage(d, { name: 'disk', file: base });
    const io = new QemuIoSession(d.uri('disk'));
    try {
      await io.run(guest.writes(20));
      const atSnapshot = Buffer.from(guest.model);
      ok(await d.qmp.execute('blockdev-snapshot-sync', { 'node-name': 'disk', 'snapshot-file': overlay, 'snapshot-node-name': 'ov', format: 'qcow2' }));
      await io.run(guest.writes(20));
      assert.deepEqual(ok(await d.qmp.execute('query-block-exports')), [{ id: 'exp-disk', type: 'nbd', 'node-name': 'ov', 'shutting-down': false }]);
      const nodes = ok(await d.qmp.execute('query-named-block-nodes')) as Array<Record<string, unknown>>;
      const ov = nodes.find((n) => n['node-name'] === 'ov');
      assert.equal(ov?.['drv'], 'qcow2');
      assert.equal(ov?.['file'], overlay);
      assert.equal(nodes.find((n) => n['node-name'] === 'disk')?.['ro'], true, 'the old top is read-only now');
      assert.match(run('qemu-img', ['info', '-U', overlay]), new RegExp(`backing file: ${base}\\n`));
      // The frozen image is readable while the daemon runs, as a backup tool reads it.
      assertImageEquals(dir, base, atSnapshot);
      // A second snapshot of the same node, a taken name, a missing node: QEMU's errors.
      assert.equal(errorOf(await d.qmp.execute('blockdev-snapshot-sync', { 'node-name': 'disk', 'snapshot-file': `${dir}/x.qcow2`, 'snapshot-node-name': 'ov2' })), "Node 'disk' is busy: node is used as backing hd of 'ov'");
      assert.equal(errorOf(await d.qmp.execute('blockdev-snapshot-sync', { 'node-name': 'ov', 'snapshot-file': `${dir}/x.qcow2`, 'snapshot-node-name': 'ov' })), 'New overlay node-name already in use');
      assert.equal(errorOf(await d.qmp.execute('blockdev-snapshot-sync', { 'node-name': 'ov', 'snapshot-file': `${dir}/x.qcow2` })), 'New overlay node-name missing');
      assert.equal(errorOf(await d.qmp.execute('blockdev-snapshot-sync', { 'node-name': 'nope', 'snapshot-file': `${dir}/x.qcow2` })), "Cannot find device='' nor node-name='nope'");
      assert.ok(!fs.existsSync(`${dir}/x.qcow2`), 'a refused snapshot creates no file');
      // A file that cannot be created: the error names it and the reason (QEMU says "Could not create").
      const missing = errorOf(await d.qmp.execute('blockdev-snapshot-sync', { 'node-name': 'ov', 'snapshot-file': `${dir}/missing/x.qcow2`, 'snapshot-node-name': 'ov9' }));
      assert.match(missing, new RegExp(`'${dir}/missing/x\\.qcow2'.*no such file or directory`, 'i'));

      // The backup is done: commit the overlay back into the base and go on writing.
      const from = d.mark();
      ok(await d.qmp.execute('block-commit', { device: 'ov', 'job-id': 'c0' }));
      await d.event('BLOCK_JOB_READY', from);
      ok(await d.qmp.execute('block-job-complete', { device: 'c0' }));
      await d.event('BLOCK_JOB_COMPLETED', from);
      await io.run(guest.writes(10));
    } finally {
      await io.close();
    }
    assert.equal(await d.quit(), 0);
  });
  assertImageEquals(dir, base, guest.model);
}));

test('blockdev-snapshot-sync refuses the same requests with the same words as qemu-storage-daemon', withDir(async (dir) => {
  const requests = (d: string): Array<Record<string, unknown>> => [
    { 'node-name': 'nope', 'snapshot-file': `${d}/x.qcow2` },
    { 'snapshot-file': `${d}/x.qcow2` },
    { 'node-name': 'disk', 'snapshot-file': `${d}/x.qcow2` },
    { 'node-name': 'disk', 'snapshot-file': `${d}/o.qcow2`, 'snapshot-node-name': 'disk' },
    { 'node-name': 'disk', 'snapshot-file': `${d}/o.raw`, 'snapshot-node-name': 'ov0', format: 'raw' },
    { 'node-name': 'disk', 'snapshot-file': `${d}/o.x`, 'snapshot-node-name': 'ov1', format: 'bogus' },
  ];
  const answers = async (qmp: { execute: (c: string, a?: Record<string, unknown>) => Promise<Record<string, unknown>> }, d: string): Promise<string[]> => {
    const out: string[] = [];
    for (const args of requests(d)) out.push(errorOf(await qmp.execute('blockdev-snapshot-sync', args)));
    return out;
  };
  const img = `${dir}/a.qcow2`;
  run('qemu-img', ['create', '-q', '-f', 'qcow2', img, '16M']);
  let theirs: string[] = [];
  await withQsd(dir, ['--blockdev', `driver=file,filename=${img},node-name=f0`, '--blockdev', 'driver=qcow2,file=f0,node-name=disk'], async (q) => {
    theirs = await answers(q.qmp, dir);
  });
  let ours: string[] = [];
  await withDaemon(dir, async (d) => {
    await addExportedImage(d, { name: 'disk', file: img });
    ours = await answers(d.qmp, dir);
    assert.equal(await d.quit(), 0);
  });
  assert.deepEqual(ours, theirs);
}));

test('blockdev-snapshot puts an overlay added with no backing over the exported node (the libvirt way), answering as qemu-storage-daemon', withDir(async (dir) => {
  const base = `${dir}/base.qcow2`;
  const overlay = `${dir}/overlay.qcow2`;
  const script = async (qmp: { execute: (c: string, a?: Record<string, unknown>) => Promise<Record<string, unknown>> }): Promise<unknown[]> => {
    const out: unknown[] = [];
    const step = async (cmd: string, args: Record<string, unknown>): Promise<void> => {
      const r = await qmp.execute(cmd, args);
      out.push('error' in r ? errorOf(r) : r['return']);
    };
    await step('blockdev-add', { driver: 'file', filename: overlay, 'node-name': 'ov-file' });
    await step('blockdev-add', { driver: 'qcow2', file: 'ov-file', 'node-name': 'ov', backing: null });
    await step('blockdev-snapshot', { node: 'nope', overlay: 'ov' });
    await step('blockdev-snapshot', { node: 'disk', overlay: 'nope' });
    await step('blockdev-snapshot', { node: 'disk', overlay: 'ov' });
    await step('blockdev-snapshot', { node: 'disk', overlay: 'ov' });
    await step('blockdev-snapshot', { node: 'ov', overlay: 'disk' });
    await step('query-block-exports', {});
    return out;
  };
  const fresh = (): void => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', base, String(SIZE)]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', overlay, String(SIZE)]);
  };
  fresh();
  let theirs: unknown[] = [];
  await withQsd(dir, ['--blockdev', `driver=file,filename=${base},node-name=disk-file`, '--blockdev', 'driver=qcow2,file=disk-file,node-name=disk', '--nbd-server', `addr.type=unix,addr.path=${dir}/qsd-nbd.sock`, '--export', 'type=nbd,id=exp-disk,node-name=disk,writable=on'], async (q) => {
    theirs = await script(q.qmp);
  });
  fresh();
  const guest = new GuestModel(Buffer.alloc(SIZE), 3);
  await withDaemon(dir, async (d) => {
    await addExportedImage(d, { name: 'disk', file: base });
    const io = new QemuIoSession(d.uri('disk'));
    try {
      await io.run(guest.writes(10));
      const atSnapshot = Buffer.from(guest.model);
      assert.deepEqual(await script(d.qmp), theirs);
      await io.run(guest.writes(10));
      assertImageEquals(dir, base, atSnapshot);
    } finally {
      await io.close();
    }
    assert.equal(await d.quit(), 0);
  });
  assert.doesNotMatch(run('qemu-img', ['info', overlay]), /backing file/, 'as QEMU, the overlay header is not rewritten');
  run('qemu-img', ['rebase', '-u', '-b', base, '-F', 'qcow2', overlay]);
  assertImageEquals(dir, overlay, guest.model);
}));

test('blockdev-snapshot-sync on an exported ploop stack adds a top delta to its DiskDescriptor.xml', withDir(async (dir) => {
  const { xml, files } = await buildStack(dir, SIZE, [['write -P 0x11 0 6M'], ['write -P 0x21 2M 3M']]);
  const guest = new GuestModel(qemuRead(dir, files), 9);
  const delta = `${dir}/root.hds.snap1`;
  await withDaemon(dir, async (d) => {
    await addExportedImage(d, { name: 'disk', file: xml, driver: 'parallels' });
    const io = new QemuIoSession(d.uri('disk'));
    try {
      await io.run(guest.writes(10));
      const atSnapshot = Buffer.from(guest.model);
      ok(await d.qmp.execute('blockdev-snapshot-sync', { 'node-name': 'disk', 'snapshot-file': delta, 'snapshot-node-name': 'top', format: 'parallels' }));
      await io.run(guest.writes(10));
      assert.deepEqual((await descriptorChain(xml)).map((r) => r.file), [...files, delta]);
      assert.ok(qemuRead(dir, files).equals(atSnapshot), 'the deltas below hold the disk as it was at the snapshot');
    } finally {
      await io.close();
    }
    assert.equal(await d.quit(), 0);
  });
  const chain = (await descriptorChain(xml)).map((r) => r.file);
  for (const f of chain) run('qemu-img', ['check', '-f', 'parallels', f]);
  assert.ok(qemuRead(dir, chain).equals(guest.model), 'the new stack reads every write');
  assert.ok(readImage(dir, delta, 'parallels').length === SIZE);
}));
