import { type TestContext, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qcow2Available, qemu, tempDir, vdisk } from './cli-oracle.js';

async function sameAsQemuImg(dir: string, argv: readonly string[]): Promise<void> {
  const expected = normalised(qemu('qemu-img', dir, argv));
  const actual = normalised(await vdisk(dir, argv));
  assert.deepEqual(actual, expected, `vdisk ${argv.join(' ')}`);
}

/** a.qcow2 (64 MiB, data at 1 MiB), b.qcow2 over it (data at 0 and 4 MiB), r.img (raw, 1 MiB). */
function makeImages(dir: string): void {
  qemu('qemu-img', dir, ['create', '-q', '-f', 'qcow2', 'a.qcow2', '64M']);
  qemu('qemu-io', dir, ['-c', 'write -P 5 1M 128k', 'a.qcow2']);
  qemu('qemu-img', dir, ['create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', 'b.qcow2']);
  qemu('qemu-io', dir, ['-c', 'write -P 0xab 0 64k', '-c', 'write -z 4M 64k', 'b.qcow2']);
  qemu('qemu-img', dir, ['create', '-q', '-f', 'raw', 'r.img', '1M']);
  qemu('qemu-io', dir, ['-f', 'raw', '-c', 'write -P 1 64k 64k', 'r.img']);
}

/** Runs `body` in a fresh directory holding makeImages' images; skipped where qcow2 is not built in. */
async function withImages(t: TestContext, body: (dir: string) => Promise<void>): Promise<void> {
  if (!(await qcow2Available())) {
    t.skip('qcow2 driver not registered in this build');
    return;
  }
  const d = tempDir();
  try {
    makeImages(d.dir);
    await body(d.dir);
  } finally {
    d.cleanup();
  }
}

test('info, map, check, compare, measure and snapshot -l read an --image-opts image as qemu-img does', (t) =>
  withImages(t, async (dir) => {
    qemu('qemu-img', dir, ['snapshot', '-c', 'snap1', 'a.qcow2']);
    const lines: ReadonlyArray<readonly string[]> = [
      ['info', '--image-opts', 'driver=qcow2,file.filename=b.qcow2'],
      ['info', '--output=json', '--image-opts', 'file.filename=b.qcow2,l2-cache-size=1M'],
      ['info', '--backing-chain', '--output=json', '--image-opts', 'driver=qcow2,file.driver=file,file.filename=b.qcow2,cache-size=2M'],
      ['info', '--image-opts', 'driver=raw,file.filename=b.qcow2'],
      ['map', '--image-opts', 'driver=qcow2,file.filename=b.qcow2,refcount-cache-size=256k'],
      ['map', '--output=json', '--image-opts', 'driver=qcow2,file.filename=b.qcow2'],
      ['map', '--output=json', '--image-opts', 'driver=qcow2,file.filename=b.qcow2,backing='],
      ['map', '--output=json', '-U', '--image-opts', 'driver=raw,file.filename=r.img,read-only=on'],
      ['check', '--image-opts', 'driver=qcow2,file.filename=b.qcow2,cache-size=1M'],
      ['check', '--output=json', '--image-opts', 'file.filename=a.qcow2'],
      ['compare', '--image-opts', 'driver=qcow2,file.filename=a.qcow2', 'driver=qcow2,file.filename=b.qcow2'],
      ['compare', '--image-opts', 'driver=qcow2,file.filename=b.qcow2', 'driver=qcow2,file.filename=b.qcow2,l2-cache-size=64k'],
      ['measure', '-O', 'qcow2', '--image-opts', 'driver=qcow2,file.filename=b.qcow2'],
      ['measure', '--output=json', '-O', 'raw', '--image-opts', 'driver=raw,file.filename=r.img'],
      ['snapshot', '-l', '--image-opts', 'driver=qcow2,file.filename=a.qcow2'],
    ];
    for (const argv of lines) await sameAsQemuImg(dir, argv);
    // The same image by path and by option string: the same report.
    const byPath = await vdisk(dir, ['info', '--output=json', '--backing-chain', 'b.qcow2']);
    const byOpts = await vdisk(dir, ['info', '--output=json', '--backing-chain', '--image-opts', 'driver=qcow2,file.filename=b.qcow2']);
    assert.equal(byOpts.stdout, byPath.stdout);
  }));

test('--image-opts strings vdisk cannot open fail as in qemu-img, naming the string, the file or the option', (t) =>
  withImages(t, async (dir) => {
    qemu('qemu-img', dir, ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'old.qcow2', '1M']);
    const bad = [
      'driver=qcow2,file.filename=missing.qcow2', 'driver=bogus,file.filename=a.qcow2', 'driver=qcow2', 'filename=a.qcow2', 'a.qcow2', '',
      'driver=raw,file.filename=r.img,l2-cache-size=1M', 'driver=qcow2,file.filename=a.qcow2,bogus=1', 'driver=qcow2,file.filename=a.qcow2,file.bogus=1',
      'driver=qcow2,file.filename=a.qcow2,l2-cache-size=abc', 'driver=qcow2,file.filename=a.qcow2,cache-size=1M,l2-cache-size=2M',
      'driver=qcow2,file.filename=a.qcow2,cache-size=1M,refcount-cache-size=2M', 'driver=qcow2,file.filename=a.qcow2,l2-cache-entry-size=100',
      'driver=qcow2,file.filename=old.qcow2,lazy-refcounts=on', 'driver=qcow2,file.filename=r.img', 'driver=qcow2,file.filename=a.qcow2,read-only=maybe',
      'driver=qcow2,file.filename=a.qcow2,backing=null', 'file.filename=a.qcow2,foo', 'driver=qcow2,file.filename=',
      // Each of QEMU's two drivers for local files refuses the other kind of file.
      'driver=raw,file.driver=file,file.filename=/dev/null', 'driver=raw,file.driver=host_device,file.filename=r.img',
    ];
    for (const opts of bad) await sameAsQemuImg(dir, ['info', '--image-opts', opts]);
    const lines: ReadonlyArray<readonly string[]> = [
      ['info', '--image-opts', '-f', 'qcow2', 'driver=qcow2,file.filename=a.qcow2'],
      ['map', '--image-opts', '-f', 'qcow2', 'a.qcow2'],
      ['check', '--image-opts', '-f', 'qcow2', 'a.qcow2'],
      ['compare', '--image-opts', '-F', 'qcow2', 'driver=qcow2,file.filename=a.qcow2', 'driver=qcow2,file.filename=b.qcow2'],
      ['compare', '--image-opts', 'driver=qcow2,file.filename=a.qcow2', 'b.qcow2'],
      ['measure', '--image-opts', '-O', 'qcow2'],
      ['measure', '-O', 'qcow2', '--image-opts', '-f', 'qcow2', 'a.qcow2'],
      ['resize', '--image-opts', 'driver=qcow2,file.filename=a.qcow2,read-only=on', '+1M'],
      ['resize', '--image-opts', '-f', 'qcow2', 'a.qcow2', '+1M'],
      ['check', '-r', 'all', '--image-opts', 'driver=qcow2,file.filename=a.qcow2,force-share=on'],
      ['map', '-U', '--image-opts', 'driver=qcow2,file.filename=a.qcow2,force-share=off'],
      ['commit', '--image-opts', 'driver=qcow2,file.filename=a.qcow2'],
      ['convert', '--target-image-opts', '-O', 'raw', 'a.qcow2', 'driver=raw,file.filename=c.raw'],
      ['convert', '-n', '--target-image-opts', 'a.qcow2', 'driver=raw,file.filename=missing.raw'],
      ['convert', '-n', '--target-image-opts', 'a.qcow2', 'c.raw'],
      ['convert', '--image-opts', '-f', 'qcow2', 'a.qcow2', 'c.raw'],
      ['dd', '--image-opts', '-f', 'qcow2', 'if=a.qcow2', 'of=c.raw'],
      ['dd', '--target-image-opts', 'if=a.qcow2', 'of=c.raw'],
      ['bitmap', '--add', '--image-opts', '-f', 'qcow2', 'a.qcow2', 'bm'],
    ];
    for (const argv of lines) await sameAsQemuImg(dir, argv);
  }));

test('convert reads --image-opts sources and writes into a --target-image-opts target as qemu-img does', (t) =>
  withImages(t, async (dir) => {
    const q = await vdisk(dir, ['convert', '-O', 'raw', '--image-opts', 'driver=qcow2,file.filename=b.qcow2,l2-cache-size=64k', 'v.raw']);
    assert.equal(q.status, 0, q.stderr);
    assert.equal(qemu('qemu-img', dir, ['compare', '-f', 'raw', '-F', 'qcow2', 'v.raw', 'b.qcow2']).status, 0);
    // -n into an existing qcow2 image named by an option string; -O names the format its checks are for.
    qemu('qemu-img', dir, ['create', '-q', '-f', 'qcow2', 't.qcow2', '64M']);
    const n = await vdisk(dir, ['convert', '-n', '-O', 'qcow2', '--target-image-opts', 'b.qcow2', 'driver=qcow2,file.filename=t.qcow2,cache-size=1M']);
    assert.equal(n.status, 0, n.stderr);
    assert.equal(qemu('qemu-img', dir, ['compare', 'b.qcow2', 't.qcow2']).status, 0);
    assert.equal(qemu('qemu-img', dir, ['check', 't.qcow2']).status, 0);
    // Both sides at once, the target probed (raw): the probe warning as qemu-img prints it.
    copyFileSync(join(dir, 'r.img'), join(dir, 'q.img'));
    qemu('qemu-img', dir, ['create', '-q', '-f', 'raw', 'qt.img', '1M']);
    qemu('qemu-img', dir, ['create', '-q', '-f', 'raw', 'vt.img', '1M']);
    const argv = (target: string): string[] => ['convert', '-n', '--image-opts', '--target-image-opts', 'driver=raw,file.filename=q.img', `file.filename=${target}`];
    const expected = normalised(qemu('qemu-img', dir, argv('qt.img')));
    const actual = normalised(await vdisk(dir, argv('vt.img')));
    assert.deepEqual(actual, { ...expected, stderr: expected.stderr.replaceAll('qt.img', 'vt.img') });
    assert.equal(qemu('qemu-img', dir, ['compare', '-f', 'raw', '-F', 'raw', 'vt.img', 'r.img']).status, 0);
  }));

test('cache.direct=on,cache.no-flush=on opens the image for O_DIRECT writes and flushes that do nothing, and writes what qemu-io writes', (t) =>
  withImages(t, async (dir) => {
    copyFileSync(join(dir, 'a.qcow2'), join(dir, 'q.qcow2'));
    copyFileSync(join(dir, 'a.qcow2'), join(dir, 'v.qcow2'));
    const argv = (file: string): string[] => [
      '--image-opts',
      '-c', 'write -P 7 60k 200k',
      '-c', 'flush',
      '-c', 'read -P 7 60k 200k',
      `driver=qcow2,file.filename=${file},cache.direct=on,cache.no-flush=on`,
    ];
    const q = normalised(qemu('qemu-io', dir, argv('q.qcow2')));
    const v = normalised(await vdisk(dir, ['io', ...argv('v.qcow2')]));
    assert.equal(v.status, 0, v.stderr);
    assert.deepEqual(v, q);
    assert.equal(qemu('qemu-img', dir, ['compare', 'v.qcow2', 'q.qcow2']).status, 0);
    assert.equal(qemu('qemu-img', dir, ['check', 'v.qcow2']).status, 0);
  }));

test('resize, amend, bitmap, snapshot, rebase, commit and dd change an --image-opts image as qemu-img does', (t) =>
  withImages(t, async (dir) => {
    // Each step on a copy per tool: q.* for qemu-img, v.* for vdisk; outputs and the images afterwards must agree.
    for (const tool of ['q', 'v']) {
      copyFileSync(join(dir, 'a.qcow2'), join(dir, `${tool}.qcow2`));
      qemu('qemu-img', dir, ['create', '-q', '-f', 'qcow2', '-b', `${tool}.qcow2`, '-F', 'qcow2', `${tool}-top.qcow2`]);
      qemu('qemu-io', dir, ['-c', 'write -P 9 2M 64k', `${tool}-top.qcow2`]);
    }
    const opts = (file: string, extra = ''): string => `driver=qcow2,file.filename=${file}${extra}`;
    const steps: ReadonlyArray<(x: string) => string[]> = [
      (x) => ['resize', '--image-opts', opts(`${x}.qcow2`, ',l2-cache-size=128k'), '+1M'],
      (x) => ['amend', '-o', 'lazy_refcounts=on', '--image-opts', opts(`${x}.qcow2`)],
      // Before the snapshots: the persistent bitmap must outlive snapshot -c and -d.
      (x) => ['bitmap', '--add', '-g', '128k', '--image-opts', opts(`${x}.qcow2`), 'bm0'],
      (x) => ['snapshot', '-c', 's1', '--image-opts', opts(`${x}.qcow2`)],
      (x) => ['snapshot', '-d', 's1', '--image-opts', opts(`${x}.qcow2`)],
      (x) => ['commit', '-d', '--image-opts', opts(`${x}-top.qcow2`)],
      (x) => ['rebase', '-u', '-b', '', '--image-opts', opts(`${x}-top.qcow2`)],
      (x) => ['dd', '-O', 'raw', 'bs=64k', 'count=48', '--image-opts', `if=${opts(`${x}.qcow2`)}`, `of=${x}-dd.raw`],
    ];
    const infoOf = (file: string): string => qemu('qemu-img', dir, ['info', '--output=json', file]).stdout.replace(/"(actual-size|filename|date-sec|date-nsec)": [^,\n]+/g, '');
    for (const step of steps) {
      const q = normalised(qemu('qemu-img', dir, step('q')));
      const v = normalised(await vdisk(dir, step('v')));
      assert.deepEqual(v, { ...q, stderr: q.stderr.replaceAll('q.qcow2', 'v.qcow2').replaceAll('q-top', 'v-top') }, step('v').join(' '));
    }
    for (const file of ['.qcow2', '-top.qcow2']) {
      assert.equal(infoOf(`v${file}`), infoOf(`q${file}`), file);
      assert.equal(qemu('qemu-img', dir, ['compare', `v${file}`, `q${file}`]).status, 0, file);
      assert.equal(qemu('qemu-img', dir, ['check', `v${file}`]).status, 0, file);
    }
    assert.equal(qemu('qemu-img', dir, ['compare', '-f', 'raw', '-F', 'raw', 'v-dd.raw', 'q-dd.raw']).status, 0);
  }));
