import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { openImage, openImageWith, type FormatTable } from '../../../src/block/open.js';
import { isVdiskError } from '../../../src/errors.js';
import type { FormatName } from '../../../src/formats/driver.js';
import { formatByName } from '../../../src/formats/registry.js';
import type { DriverOpenOptions, FormatModule } from '../../../src/formats/registry-types.js';
import { FakeDriver } from './fake-driver.js';
import { withDir } from '../../support/temp-dir.js';

// A stand-in "qcow2" whose files are "FAKE" + JSON { length, backing?, backingFormat? }.
interface FakeFile {
  readonly length: number;
  readonly backing?: string;
  readonly backingFormat?: FormatName;
}

function fakeTable(opened: Array<{ path: string; options: DriverOpenOptions; driver: FakeDriver }>): FormatTable {
  const fake: FormatModule = {
    name: 'qcow2',
    probe: (head) => new TextDecoder().decode(head.subarray(0, 4)) === 'FAKE',
    async open(path, options) {
      const meta = JSON.parse(fs.readFileSync(path, 'utf8').slice(4)) as FakeFile;
      const driver = new FakeDriver({
        filename: path,
        length: meta.length,
        readOnly: options.readOnly,
        backingRef: meta.backing ? { filename: meta.backing, format: meta.backingFormat ?? null } : null,
      });
      opened.push({ path, options, driver });
      return driver;
    },
    async create() {},
  };
  return {
    byName: (name) => (name === 'qcow2' ? fake : formatByName(name)),
    probe: (head) => (fake.probe(head) ? 'qcow2' : 'raw'),
  };
}

function writeFake(path: string, meta: FakeFile): void {
  fs.writeFileSync(path, 'FAKE' + JSON.stringify(meta));
}

test(
  'a chain opens with backing names relative to the overlay\'s directory, backings read-only',
  withDir(async (dir) => {
    fs.mkdirSync(join(dir, 'sub'));
    writeFake(join(dir, 'sub', 'base.img'), { length: 8192 });
    writeFake(join(dir, 'sub', 'mid.img'), { length: 8192, backing: 'base.img' });
    writeFake(join(dir, 'top.img'), { length: 8192, backing: 'sub/mid.img' });
    const opened: Array<{ path: string; options: DriverOpenOptions; driver: FakeDriver }> = [];
    const node = await openImageWith(join(dir, 'top.img'), {}, fakeTable(opened));
    assert.deepEqual(
      node.chain().map((n) => n.filename),
      [join(dir, 'top.img'), join(dir, 'sub/mid.img'), join(dir, 'sub/base.img')],
    );
    assert.deepEqual(opened.map((o) => o.options.readOnly), [false, true, true]);
    assert.ok(opened[0]?.driver.backing !== null);
    await node.close();
    assert.ok(opened.every((o) => o.driver.closed));
  }),
);

test(
  'noBacking opens the top alone',
  withDir(async (dir) => {
    writeFake(join(dir, 'top.img'), { length: 8192, backing: 'missing.img' });
    const node = await openImageWith(join(dir, 'top.img'), { noBacking: true }, fakeTable([]));
    assert.equal(node.backing, null);
    await node.close();
  }),
);

test(
  'a missing backing file is named with its overlay, and what was opened is closed again',
  withDir(async (dir) => {
    writeFake(join(dir, 'b.img'), { length: 8192, backing: 'gone.img' });
    writeFake(join(dir, 'a.img'), { length: 8192, backing: 'b.img' });
    const opened: Array<{ path: string; options: DriverOpenOptions; driver: FakeDriver }> = [];
    await assert.rejects(openImageWith(join(dir, 'a.img'), {}, fakeTable(opened)), (e) => {
      assert.ok(isVdiskError(e, 'ENOENT'));
      assert.equal(e.message, `Could not open backing file '${join(dir, 'gone.img')}' of '${join(dir, 'b.img')}': No such file or directory`);
      return true;
    });
    assert.equal(opened.length, 2);
    assert.ok(opened.every((o) => o.driver.closed));
  }),
);

test(
  'a backing chain that loops is refused, also through another name for the same file',
  withDir(async (dir) => {
    writeFake(join(dir, 'a.img'), { length: 8192, backing: 'b.img' });
    writeFake(join(dir, 'b.img'), { length: 8192, backing: 'link.img' });
    fs.symlinkSync('a.img', join(dir, 'link.img'));
    await assert.rejects(openImageWith(join(dir, 'a.img'), {}, fakeTable([])), (e) => {
      assert.ok(isVdiskError(e, 'EINVAL'));
      assert.match(e.message, /loop/);
      return true;
    });
    writeFake(join(dir, 'self.img'), { length: 8192, backing: 'self.img' });
    await assert.rejects(openImageWith(join(dir, 'self.img'), {}, fakeTable([])), /loop/);
  }),
);

test(
  'a backing recorded as raw stays raw even if its content would probe as another format',
  withDir(async (dir) => {
    writeFake(join(dir, 'guest.raw'), { length: 8192, backing: '/etc/passwd' });
    writeFake(join(dir, 'top.img'), { length: 8192, backing: 'guest.raw', backingFormat: 'raw' });
    const node = await openImageWith(join(dir, 'top.img'), {}, fakeTable([]));
    assert.equal(node.backing?.format, 'raw');
    assert.equal(node.backing?.backing, null);
    await node.close();
  }),
);

test(
  'an explicit format is never second-guessed by probing',
  withDir(async (dir) => {
    writeFake(join(dir, 'x.img'), { length: 8192 });
    const node = await openImageWith(join(dir, 'x.img'), { format: 'raw' }, fakeTable([]));
    assert.equal(node.format, 'raw');
    await node.close();
    const probed = await openImageWith(join(dir, 'x.img'), {}, fakeTable([]));
    assert.equal(probed.format, 'qcow2');
    await probed.close();
  }),
);

test(
  'a missing image is ENOENT with QEMU\'s wording',
  withDir(async (dir) => {
    const path = join(dir, 'nope.img');
    await assert.rejects(openImage(path), (e) => {
      assert.ok(isVdiskError(e, 'ENOENT'));
      assert.equal(e.message, `Could not open '${path}': No such file or directory`);
      return true;
    });
  }),
);

test(
  'a plain file probes as raw, and a probed raw image refuses a write that would make it qcow2',
  withDir(async (dir) => {
    const path = join(dir, 'guest.img');
    fs.writeFileSync(path, new Uint8Array(65536));
    const node = await openImage(path);
    assert.equal(node.format, 'raw');
    await assert.rejects(node.write(0, new Uint8Array([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3])), (e) => isVdiskError(e, 'EPERM'));
    await node.write(0, new Uint8Array([1, 2, 3]));
    await node.close();
    const explicit = await openImage(path, { format: 'raw' });
    await explicit.write(0, new Uint8Array([0x51, 0x46, 0x49, 0xfb]));
    await explicit.close();
  }),
);
