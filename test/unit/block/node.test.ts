import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockNode } from '../../../src/block/node.js';
import { isVdiskError } from '../../../src/errors.js';
import { FakeDriver } from './fake-driver.js';

test('requests outside the disk are refused with ERANGE naming offset, length and size', async () => {
  const node = await BlockNode.attach(new FakeDriver({ filename: 'a.img', length: 8192 }));
  await assert.rejects(node.read(8000, new Uint8Array(512)), (e) => {
    assert.ok(isVdiskError(e, 'ERANGE'));
    assert.match(e.message, /offset 8000 length 512 .*'a\.img' \(size 8192\)/);
    return true;
  });
  await assert.rejects(node.write(-1, new Uint8Array(1)), (e) => isVdiskError(e, 'EINVAL'));
  await assert.rejects(node.writeZeroes(0, 8193), (e) => isVdiskError(e, 'ERANGE'));
  await assert.rejects(node.blockStatus(1.5, 2), (e) => isVdiskError(e, 'EINVAL'));
  assert.deepEqual(await node.blockStatus(8192, 0), []);
});

test('writes to a read-only node are refused with EPERM before reaching the driver', async () => {
  const driver = new FakeDriver({ filename: 'ro.img', length: 8192, readOnly: true });
  const node = await BlockNode.attach(driver);
  await assert.rejects(node.write(0, new Uint8Array(1)), (e) => isVdiskError(e, 'EPERM'));
  await assert.rejects(node.discard(0, 1), (e) => isVdiskError(e, 'EPERM'));
  await assert.rejects(node.resize(4096), (e) => isVdiskError(e, 'EPERM'));
  assert.deepEqual(driver.log, []);
});

test('compressed writes are ENOTSUP where the driver has no compression', async () => {
  const node = await BlockNode.attach(new FakeDriver({ filename: 'a.img', length: 8192 }));
  await assert.rejects(node.writeCompressed(0, new Uint8Array(4096)), (e) => isVdiskError(e, 'ENOTSUP'));
});

test('node properties come from the driver, the cluster size from its info', async () => {
  const node = await BlockNode.attach(new FakeDriver({ filename: 'a.img', length: 8192, cluster: 2048 }));
  assert.equal(node.filename, 'a.img');
  assert.equal(node.format, 'qcow2');
  assert.equal(node.length, 8192);
  assert.equal(node.clusterSize, 2048);
  assert.equal(node.backing, null);
  await node.resize(16384);
  assert.equal(node.length, 16384);
});

test('close flushes and closes every node, top first, once', async () => {
  const base = new FakeDriver({ filename: 'base', length: 4096, readOnly: true });
  const top = new FakeDriver({ filename: 'top', length: 4096 });
  const order: string[] = [];
  for (const d of [base, top]) {
    const close = d.close.bind(d);
    d.close = async () => {
      order.push(d.filename);
      await close();
    };
  }
  const node = await BlockNode.attach(top, { backing: await BlockNode.attach(base) });
  assert.deepEqual(node.chain().map((n) => n.filename), ['top', 'base']);
  await node.close();
  await node.close();
  assert.deepEqual(order, ['top', 'base']);
  assert.deepEqual(top.log, ['flush', 'close']);
  await assert.rejects(node.read(0, new Uint8Array(1)), (e) => isVdiskError(e, 'EINVAL'));
});

test('close still closes the lower nodes when the top fails, then reports the failure', async () => {
  const base = new FakeDriver({ filename: 'base', length: 4096 });
  const top = new FakeDriver({ filename: 'top', length: 4096 });
  top.close = async () => {
    throw new Error('boom');
  };
  const node = await BlockNode.attach(top, { backing: await BlockNode.attach(base) });
  await assert.rejects(node.close(), /boom/);
  assert.equal(base.closed, true);
});

test('a probed raw node refuses writes that would make its first sector probe as another format', async () => {
  const driver = new FakeDriver({ filename: 'guest.img', length: 8192, format: 'raw' });
  const node = await BlockNode.attach(driver, { probedRaw: true });
  const qcow2Magic = new Uint8Array([0x51, 0x46, 0x49, 0xfb]);
  await assert.rejects(node.write(0, qcow2Magic), (e) => isVdiskError(e, 'EPERM'));
  await node.write(0, new Uint8Array([1, 2, 3, 4]));
  await node.write(4096, qcow2Magic);
  // The same write is fine when the format was given explicitly.
  const explicit = await BlockNode.attach(new FakeDriver({ filename: 'x.img', length: 8192, format: 'raw' }));
  await explicit.write(0, qcow2Magic);
});

test('a request whose driver call throws or rejects is refused and leaves nothing in flight', async () => {
  const driver = new FakeDriver({ filename: 'a.img', length: 8192 });
  const node = await BlockNode.attach(driver);
  const boom = new Error('boom');
  driver.write = () => Promise.reject(boom);
  driver.read = () => {
    throw boom;
  };
  await assert.rejects(node.write(0, new Uint8Array(512)), (e) => e === boom);
  await assert.rejects(node.read(0, new Uint8Array(512)), (e) => e === boom);
  // A quiesce waits for every request in flight: it is granted at once only if both ended.
  const release = await Promise.race([node.quiesce(), new Promise<null>((r) => setTimeout(() => r(null), 1000))]);
  assert.ok(release, 'no request stayed in flight');
  release();
});
