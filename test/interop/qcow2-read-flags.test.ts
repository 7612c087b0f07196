import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { Qcow2Driver } from '../../src/formats/qcow2/qcow2-driver.js';
import { qcow2Format } from '../../src/formats/qcow2/index.js';
import { isVdiskError } from '../../src/errors.js';
import { qemuImg, readAll, tmpDir } from './qcow2-helpers.js';

test('a dirty lazy-refcounts image opens read-only without repair and reads its data', async () => {
  const dir = tmpDir();
  try {
    const f = path.join(dir, 'lazy.qcow2');
    qemuImg('create', '-f', 'qcow2', '-o', 'lazy_refcounts=on', f, '1M');
    // 'abort' kills qemu-io before the clean close, leaving the dirty bit set.
    spawnSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x42 0 128k', '-c', 'abort', f]);
    const head = fs.readFileSync(f).subarray(72, 80);
    assert.equal(head[7]! & 1, 1, 'dirty bit expected');
    const d = await Qcow2Driver.open(f, { readOnly: true });
    try {
      const all = await readAll(d);
      assert.ok(all.subarray(0, 131072).every((b) => b === 0x42));
      assert.equal((await d.info()).dirtyFlag, true);
    } finally {
      await d.close();
    }
    // Read-write needs the repair; without a checker it is refused, not half-opened.
    await assert.rejects(Qcow2Driver.open(f, { readOnly: false }), (e: unknown) => isVdiskError(e));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the corrupt bit refuses read-write open; read-only open works', async () => {
  const dir = tmpDir();
  try {
    const f = path.join(dir, 'c.qcow2');
    qemuImg('create', '-f', 'qcow2', f, '1M');
    const fd = fs.openSync(f, 'r+');
    fs.writeSync(fd, Buffer.from([0, 0, 0, 0, 0, 0, 0, 2]), 0, 8, 72);
    fs.closeSync(fd);
    await assert.rejects(Qcow2Driver.open(f, { readOnly: false }), (e: unknown) => isVdiskError(e, 'EPERM'));
    const d = await Qcow2Driver.open(f, { readOnly: true });
    await d.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('qcow2Format probes the magic and creates images qemu-img accepts', async () => {
  const dir = tmpDir();
  try {
    const f = path.join(dir, 'n.qcow2');
    await qcow2Format.create(f, { size: 1 << 20, options: {} });
    assert.ok(qcow2Format.probe(fs.readFileSync(f).subarray(0, 512)));
    assert.ok(!qcow2Format.probe(new Uint8Array(512)));
    const d = await qcow2Format.open(f, { readOnly: false });
    await d.write(4096, new Uint8Array(8192).fill(9));
    await d.close();
    const check = JSON.parse(qemuImg('check', '--output=json', f)) as { leaks?: number; corruptions?: number };
    assert.equal(check.leaks ?? 0, 0);
    assert.equal(check.corruptions ?? 0, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
