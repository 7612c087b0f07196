import { test } from 'node:test';
import assert from 'node:assert/strict';
import { normalised, qemu, tempDir, vdisk } from './cli-oracle.js';

/** Runs one qemu-img command line through both tools; expects the same stdout, stderr and status. */
async function sameAsQemu(dir: string, argv: readonly string[]): Promise<void> {
  const q = normalised(qemu('qemu-img', dir, argv));
  const v = normalised(await vdisk(dir, argv));
  assert.deepEqual(v, q, argv.join(' '));
}

/** A parallels (ploop) image written by qemu-io: data, zeros written as data, a partial cluster, holes. */
function ploopImage(dir: string, name: string, opts: readonly string[] = []): void {
  qemu('qemu-img', dir, ['create', '-q', '-f', 'parallels', ...opts, name, '16M']);
  const r = qemu('qemu-io', dir, ['-f', 'parallels', '-c', 'write -P 1 0 64k', '-c', 'write -P 2 3M 1k', '-c', 'write -P 0 6M 1M', '-c', 'write -P 3 15M 1M', name]);
  assert.equal(r.status, 0, r.stderr);
}

test('map of ploop images prints what qemu-img map prints, human and JSON, with ranges', async () => {
  const t = tempDir();
  try {
    ploopImage(t.dir, 'p.hds');
    ploopImage(t.dir, 'small.hds', ['-o', 'cluster_size=64k']);
    for (const img of ['p.hds', 'small.hds']) {
      for (const fmt of [['-f', 'parallels'], []]) {
        await sameAsQemu(t.dir, ['map', ...fmt, img]);
        await sameAsQemu(t.dir, ['map', '--output=json', ...fmt, img]);
        await sameAsQemu(t.dir, ['map', '--output=json', '--start-offset=3M', '--max-length=5M', ...fmt, img]);
      }
    }
  } finally {
    t.cleanup();
  }
});

test('convert from and to ploop gives images qemu-img compares equal and maps the same', async () => {
  const t = tempDir();
  try {
    ploopImage(t.dir, 'p.hds');
    for (const [out, fmt] of [['raw', 'raw'], ['qcow2', 'qcow2'], ['parallels', 'parallels']] as const) {
      const q = qemu('qemu-img', t.dir, ['convert', '-f', 'parallels', '-O', out, 'p.hds', `q.${fmt}`]);
      const v = await vdisk(t.dir, ['convert', '-f', 'parallels', '-O', out, 'p.hds', `v.${fmt}`]);
      assert.deepEqual(normalised(v), normalised(q), `convert -O ${out}`);
      const c = qemu('qemu-img', t.dir, ['compare', '-f', fmt, '-F', fmt, `q.${fmt}`, `v.${fmt}`]);
      assert.equal(c.status, 0, `${out}: ${c.stdout}${c.stderr}`);
      const qm = qemu('qemu-img', t.dir, ['map', '--output=json', '-f', fmt, `q.${fmt}`]);
      const vm = qemu('qemu-img', t.dir, ['map', '--output=json', '-f', fmt, `v.${fmt}`]);
      // Host offsets may differ between writers; which ranges hold data must not.
      const shape = (s: string): string => s.replace(/, "offset": \d+/g, '');
      assert.equal(shape(vm.stdout), shape(qm.stdout), `map of the -O ${out} copy`);
    }
    const v = await vdisk(t.dir, ['convert', '-m', '3', '-W', '-f', 'qcow2', '-O', 'parallels', 'q.qcow2', 'back.hds']);
    assert.equal(v.status, 0, v.stderr);
    assert.equal(qemu('qemu-img', t.dir, ['check', '-f', 'parallels', 'back.hds']).status, 0);
    await sameAsQemu(t.dir, ['compare', '-f', 'parallels', '-F', 'parallels', 'p.hds', 'back.hds']);
  } finally {
    t.cleanup();
  }
});

test('compare of ploop images: equal, a difference and its offset, strict mode and sizes, as qemu-img', async () => {
  const t = tempDir();
  try {
    ploopImage(t.dir, 'a.hds');
    ploopImage(t.dir, 'b.hds');
    qemu('qemu-img', t.dir, ['convert', '-f', 'parallels', '-O', 'raw', 'a.hds', 'a.raw']);
    await sameAsQemu(t.dir, ['compare', '-f', 'parallels', '-F', 'parallels', 'a.hds', 'b.hds']);
    await sameAsQemu(t.dir, ['compare', '-f', 'parallels', '-F', 'raw', 'a.hds', 'a.raw']);
    await sameAsQemu(t.dir, ['compare', '-s', '-f', 'parallels', '-F', 'raw', 'a.hds', 'a.raw']);
    qemu('qemu-io', t.dir, ['-f', 'parallels', '-c', 'write -P 9 5M 512', 'b.hds']);
    await sameAsQemu(t.dir, ['compare', '-f', 'parallels', '-F', 'parallels', 'a.hds', 'b.hds']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'parallels', 'big.hds', '32M']);
    await sameAsQemu(t.dir, ['compare', 'a.hds', 'big.hds']);
    await sameAsQemu(t.dir, ['compare', '-s', 'a.hds', 'big.hds']);
  } finally {
    t.cleanup();
  }
});
