import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { normalised, qcow2Available, qemu, tempDir, vdisk } from './cli-oracle.js';

function same(dir: string, a: string, b: string, formats: readonly string[] = []): void {
  const r = qemu('qemu-img', dir, ['compare', ...formats, a, b]);
  assert.equal(r.status, 0, `${a} and ${b} differ: ${r.stdout}${r.stderr}`);
}

/** A raw source with data, a zero-filled data run and holes. */
function rawSource(dir: string): void {
  qemu('qemu-img', dir, ['create', '-q', '-f', 'raw', 's.img', '8M']);
  qemu('qemu-io', dir, ['-f', 'raw', '-c', 'write -P 1 64k 64k', '-c', 'write -P 2 3M 1k', '-c', 'write -z 5M 1M', '-c', 'write -P 0 6M 64k', 'r', 's.img']);
}

test('convert raw to raw copies the data and leaves the holes sparse', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    const r = await vdisk(t.dir, ['convert', '-f', 'raw', '-O', 'raw', 's.img', 'd.img']);
    assert.deepEqual(r, { stdout: '', stderr: '', status: 0 });
    same(t.dir, 's.img', 'd.img', ['-f', 'raw', '-F', 'raw']);
    assert.equal(statSync(join(t.dir, 'd.img')).size, 8 * 1024 * 1024);
    // Only the 64 KiB and 1 KiB (one 4 KiB block) of data are allocated, as qemu-img's own copy does.
    qemu('qemu-img', t.dir, ['convert', '-f', 'raw', '-O', 'raw', 's.img', 'q.img']);
    assert.equal(statSync(join(t.dir, 'd.img')).blocks, statSync(join(t.dir, 'q.img')).blocks);
  } finally {
    t.cleanup();
  }
});

test('convert -p prints qemu-img progress lines ending with 100% and a newline', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    const r = await vdisk(t.dir, ['convert', '-p', '-f', 'raw', '-O', 'raw', 's.img', 'd.img']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^    \(0\.00\/100%\)\r/);
    assert.match(r.stdout, /    \(100\.00\/100%\)\r\n$/);
    for (const line of r.stdout.split('\r').slice(0, -1)) assert.match(line, /^    \(\d{1,3}\.\d\d\/100%\)$/);
    const q = await vdisk(t.dir, ['convert', '-p', '-q', '-f', 'raw', '-O', 'raw', 's.img', 'e.img']);
    assert.equal(q.stdout, '');
  } finally {
    t.cleanup();
  }
});

test('convert -n into an existing image overwrites it, zeroing what the source has as holes', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 'd.img', '8M']);
    qemu('qemu-io', t.dir, ['-f', 'raw', '-c', 'write -P 9 0 8M', 'd.img']);
    const r = await vdisk(t.dir, ['convert', '-n', '-f', 'raw', '-O', 'raw', 's.img', 'd.img']);
    assert.equal(r.status, 0, r.stderr);
    same(t.dir, 's.img', 'd.img', ['-f', 'raw', '-F', 'raw']);
  } finally {
    t.cleanup();
  }
});

test('convert of several sources concatenates them', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    qemu('qemu-img', t.dir, ['convert', '-f', 'raw', '-O', 'raw', 's.img', 's.img', 'q.img']);
    const r = await vdisk(t.dir, ['convert', '-f', 'raw', '-O', 'raw', 's.img', 's.img', 'd.img']);
    assert.equal(r.status, 0, r.stderr);
    same(t.dir, 'q.img', 'd.img', ['-f', 'raw', '-F', 'raw']);
  } finally {
    t.cleanup();
  }
});

test('convert errors match qemu-img', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    for (const argv of [
      ['convert', '-O', 'raw', 'missing.img', 'x.img'],
      ['convert', '-O', 'raw', 's.img'],
      ['convert', '-O', 'raw', '-o', 'help'],
      ['convert', '-O', 'qcow2', '-B', 's.img', 's.img', 'x.qcow2'],
      // Copy offloading never sees the bytes: no compression, no -S, no salvaging.
      ['convert', '-C', '-c', '-O', 'qcow2', 's.img', 'x.qcow2'],
      ['convert', '-C', '-S', '4k', '-O', 'raw', 's.img', 'x.img'],
      ['convert', '-C', '--salvage', '-O', 'raw', 's.img', 'x.img'],
    ]) {
      assert.deepEqual(normalised(await vdisk(t.dir, argv)), normalised(qemu('qemu-img', t.dir, argv)), argv.join(' '));
    }
  } finally {
    t.cleanup();
  }
});

test('convert between qcow2 and raw both ways gives images qemu-img compares equal', async (t) => {
  if (!(await qcow2Available())) {
    t.skip('qcow2 driver not registered in this build');
    return;
  }
  const d = tempDir();
  try {
    rawSource(d.dir);
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M']);
    qemu('qemu-io', d.dir, ['-c', 'write -P 4 0 1M', 'base.qcow2']);
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
    qemu('qemu-io', d.dir, ['-c', 'write -P 5 512k 64k', '-c', 'write -z 2M 64k', '-c', 'write -c -P 6 4M 64k', 'top.qcow2']);
    for (const argv of [
      ['-f', 'raw', '-O', 'qcow2', 's.img', 'a.qcow2'],
      ['-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4k', 's.img', 'b.qcow2'],
      ['-f', 'raw', '-O', 'qcow2', '-c', 's.img', 'c.qcow2'],
      ['-O', 'raw', 'top.qcow2', 'top.raw'],
      ['-O', 'qcow2', 'top.qcow2', 'flat.qcow2'],
    ]) {
      const r = await vdisk(d.dir, ['convert', ...argv]);
      assert.equal(r.status, 0, `${argv.join(' ')}: ${r.stderr}`);
      same(d.dir, argv[argv.length - 2] ?? '', argv[argv.length - 1] ?? '');
      const target = argv[argv.length - 1] ?? '';
      if (target.endsWith('.qcow2')) assert.equal(qemu('qemu-img', d.dir, ['check', target]).status, 0, `check ${target}`);
    }
    const r = await vdisk(d.dir, ['convert', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', 'rebased.qcow2']);
    assert.equal(r.status, 0, r.stderr);
    same(d.dir, 'top.qcow2', 'rebased.qcow2');
    // Same allocation as qemu-img's own conversion.
    qemu('qemu-img', d.dir, ['convert', '-f', 'raw', '-O', 'qcow2', 's.img', 'q.qcow2']);
    assert.equal(qemu('qemu-img', d.dir, ['map', '--output=json', 'a.qcow2']).stdout.replace(/, "offset": \d+/g, ''), qemu('qemu-img', d.dir, ['map', '--output=json', 'q.qcow2']).stdout.replace(/, "offset": \d+/g, ''));
  } finally {
    d.cleanup();
  }
});

test('convert -p prints the same progress bytes as qemu-img', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    const q = qemu('qemu-img', t.dir, ['convert', '-p', '-f', 'raw', '-O', 'raw', 's.img', 'q.img']);
    const v = await vdisk(t.dir, ['convert', '-p', '-f', 'raw', '-O', 'raw', 's.img', 'v.img']);
    assert.equal(v.status, 0, v.stderr);
    // The intermediate steps depend on each tool's chunking; the start and the end are fixed.
    assert.equal(v.stdout.slice(0, 16), q.stdout.slice(0, 16));
    assert.equal(v.stdout.slice(-37), q.stdout.slice(-37));
  } finally {
    t.cleanup();
  }
});

test('convert -m N and -W give the same image as qemu-img; bad -m is refused as qemu-img refuses it', async () => {
  const t = tempDir();
  try {
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 's.qcow2', '40M']);
    const writes = Array.from({ length: 20 }, (_, i) => ['-c', `write -P ${i + 1} ${i * 2}M ${i % 3 === 0 ? '1M' : '3k'}`]).flat();
    qemu('qemu-io', t.dir, [...writes, 's.qcow2']);
    for (const extra of [['-m', '1'], ['-m', '16'], ['-W'], ['-m', '3', '-W'], ['-W', '-c']]) {
      for (const fmt of ['raw', 'qcow2']) {
        if (extra.includes('-c') && fmt === 'raw') continue;
        const out = `d-${extra.join('')}.${fmt}`;
        const r = await vdisk(t.dir, ['convert', ...extra, '-f', 'qcow2', '-O', fmt, 's.qcow2', out]);
        assert.deepEqual(r, { stdout: '', stderr: '', status: 0 }, extra.join(' '));
        same(t.dir, 's.qcow2', out, ['-f', 'qcow2', '-F', fmt]);
        if (fmt === 'qcow2') assert.equal(qemu('qemu-img', t.dir, ['check', out]).status, 0);
      }
    }
    for (const m of ['0', '17', 'abc']) {
      const q = normalised(qemu('qemu-img', t.dir, ['convert', '-m', m, '-O', 'raw', 's.qcow2', 'x.raw']));
      assert.deepEqual(normalised(await vdisk(t.dir, ['convert', '-m', m, '-O', 'raw', 's.qcow2', 'x.raw'])), q);
    }
  } finally {
    t.cleanup();
  }
});

test('create and convert warn on stderr, stdout unchanged, when extended_l2 or zstd needs a newer QEMU', async () => {
  const t = tempDir();
  try {
    const l2 = 'vdisk: warning: extended_l2=on: images with extended L2 entries need QEMU 5.2 or later\n';
    const zstd = 'vdisk: warning: compression_type=zstd: zstd-compressed images need QEMU 5.1 or later\n';
    const c = await vdisk(t.dir, ['create', '-f', 'qcow2', '-o', 'extended_l2=on,compression_type=zstd', 'a.qcow2', '1M']);
    const q = qemu('qemu-img', t.dir, ['create', '-f', 'qcow2', '-o', 'extended_l2=on,compression_type=zstd', 'q.qcow2', '1M']);
    assert.equal(c.status, 0);
    assert.equal(c.stdout, q.stdout.replace("'q.qcow2'", "'a.qcow2'"));
    assert.equal(c.stderr, l2 + zstd);
    const plain = await vdisk(t.dir, ['create', '-q', '-f', 'qcow2', '-o', 'extended_l2=off', 'b.qcow2', '1M']);
    assert.deepEqual(plain, { stdout: '', stderr: '', status: 0 });
    const v = await vdisk(t.dir, ['convert', '-O', 'qcow2', '-o', 'compression_type=zstd', 'b.qcow2', 'z.qcow2']);
    assert.deepEqual(v, { stdout: '', stderr: zstd, status: 0 });
    assert.equal(qemu('qemu-img', t.dir, ['check', 'z.qcow2']).status, 0);
  } finally {
    t.cleanup();
  }
});

/** Checks qemu-img commit -p's output shape: progress lines from 0.00 rising to 100.00, a newline, the message. */
function commitProgressShape(stdout: string): string {
  const end = stdout.lastIndexOf('\r');
  const lines = stdout.slice(0, end).split('\r');
  let last = -1;
  for (const line of lines) {
    const m = /^    \((\d{1,3}\.\d\d)\/100%\)$/.exec(line);
    assert.ok(m, `progress line ${JSON.stringify(line)}`);
    const value = Number(m[1]);
    assert.ok(value >= last, `${value} after ${last}`);
    last = value;
  }
  return `${lines[0]}|${lines[lines.length - 1]}|${stdout.slice(end + 1)}`;
}

test('commit -p prints progress in qemu-img commit -p shape', async () => {
  const t = tempDir();
  try {
    for (const who of ['q', 'v']) {
      qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', `${who}b.qcow2`, '8M']);
      qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', '-b', `${who}b.qcow2`, '-F', 'qcow2', `${who}t.qcow2`]);
      qemu('qemu-io', t.dir, ['-c', 'write -P 5 0 3M', '-c', 'write 6M 64k', `${who}t.qcow2`]);
    }
    const q = qemu('qemu-img', t.dir, ['commit', '-p', 'qt.qcow2']);
    const v = await vdisk(t.dir, ['commit', '-p', 'vt.qcow2']);
    assert.equal(v.status, q.status);
    assert.equal(v.stderr, q.stderr);
    assert.equal(commitProgressShape(v.stdout), commitProgressShape(q.stdout));
    same(t.dir, 'qb.qcow2', 'vb.qcow2');
    assert.deepEqual(await vdisk(t.dir, ['commit', '-p', '-q', 'vt.qcow2']), { stdout: '', stderr: '', status: 0 });
  } finally {
    t.cleanup();
  }
});

test('whole-chunk copies (inline I/O into page-aligned buffers) keep data, holes and zero ranges as qemu-img does, in order and with -W', async (t) => {
  if (!(await qcow2Available())) {
    t.skip('qcow2 driver not registered in this build');
    return;
  }
  const d = tempDir();
  // Where each range is on the host is left out, and neighbours alike in all else merged: with -W the
  // chunks are written out of order, so their clusters need not follow each other on the host (nor do qemu-img's).
  const mapOf = (file: string): string => {
    const extents = JSON.parse(qemu('qemu-img', d.dir, ['map', '--output=json', file]).stdout) as { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean }[];
    const merged: (typeof extents)[number][] = [];
    for (const { start, length, depth, present, zero, data } of extents) {
      const last = merged[merged.length - 1];
      if (last && last.depth === depth && last.present === present && last.zero === zero && last.data === data) last.length += length;
      else merged.push({ start, length, depth, present, zero, data });
    }
    return JSON.stringify(merged);
  };
  try {
    // 1 MiB data / 1 MiB hole (the bench's pattern), a 3 MiB data run (more than one 2 MiB chunk),
    // a zero-filled data range and a range written with zeros.
    qemu('qemu-img', d.dir, ['create', '-q', '-f', 'raw', 's.img', '24M']);
    const writes = [0, 2, 4, 6].flatMap((m) => ['-c', `write -P ${m + 1} ${m}M 1M`]);
    qemu('qemu-io', d.dir, ['-f', 'raw', ...writes, '-c', 'write -P 9 9M 3M', '-c', 'write -P 0 14M 1M', '-c', 'write -z 16M 2M', '-c', 'write -P 7 23M 4k', 's.img']);
    qemu('qemu-img', d.dir, ['convert', '-f', 'raw', '-O', 'qcow2', 's.img', 'q.qcow2']);
    qemu('qemu-img', d.dir, ['convert', '-f', 'qcow2', '-O', 'raw', 'q.qcow2', 'q.raw']);
    for (const extra of [[], ['-W'], ['-m', '1'], ['-W', '-m', '16']]) {
      const name = `v${extra.join('')}`;
      let r = await vdisk(d.dir, ['convert', ...extra, '-f', 'raw', '-O', 'qcow2', 's.img', `${name}.qcow2`]);
      assert.equal(r.status, 0, r.stderr);
      same(d.dir, 's.img', `${name}.qcow2`, ['-f', 'raw', '-F', 'qcow2']);
      assert.equal(qemu('qemu-img', d.dir, ['check', `${name}.qcow2`]).status, 0, `check ${name}.qcow2`);
      assert.equal(mapOf(`${name}.qcow2`), mapOf('q.qcow2'), `${extra.join(' ')}: allocation as qemu-img's`);
      r = await vdisk(d.dir, ['convert', ...extra, '-f', 'qcow2', '-O', 'raw', 'q.qcow2', `${name}.raw`]);
      assert.equal(r.status, 0, r.stderr);
      same(d.dir, 'q.qcow2', `${name}.raw`, ['-f', 'qcow2', '-F', 'raw']);
      assert.equal(mapOf(`${name}.raw`), mapOf('q.raw'), `${extra.join(' ')}: holes of the raw target as qemu-img's`);
    }
  } finally {
    d.cleanup();
  }
});

test('convert -C copies through the kernel: the same image and the same allocation as qemu-img convert -C (zero data copied as data), and falls back for compressed clusters', async () => {
  const t = tempDir();
  try {
    rawSource(t.dir);
    for (const fmt of ['qcow2', 'raw']) {
      const argv = ['convert', '-C', '-f', 'raw', '-O', fmt, 's.img'];
      const v = await vdisk(t.dir, [...argv, `v.${fmt}`]);
      assert.deepEqual(v, { stdout: '', stderr: '', status: 0 }, fmt);
      qemu('qemu-img', t.dir, [...argv, `q.${fmt}`]);
      same(t.dir, 's.img', `v.${fmt}`, ['-f', 'raw', '-F', fmt]);
      const map = (file: string): string => qemu('qemu-img', t.dir, ['map', '--output=json', '-f', fmt, file]).stdout;
      assert.equal(map(`v.${fmt}`), map(`q.${fmt}`), `${fmt}: allocation as qemu-img -C leaves it`);
      if (fmt === 'qcow2') assert.equal(qemu('qemu-img', t.dir, ['check', 'v.qcow2']).status, 0);
    }
    // qcow2 sources: plain clusters through the kernel, compressed ones through memory.
    qemu('qemu-img', t.dir, ['convert', '-c', '-f', 'raw', '-O', 'qcow2', 's.img', 'c.qcow2']);
    for (const [src, fmt] of [['v.qcow2', 'raw'], ['c.qcow2', 'qcow2'], ['v.qcow2', 'qcow2']] as const) {
      const out = `from-${src}.${fmt}`;
      const r = await vdisk(t.dir, ['convert', '-C', '-W', '-f', 'qcow2', '-O', fmt, src, out]);
      assert.equal(r.status, 0, r.stderr);
      same(t.dir, src, out, ['-f', 'qcow2', '-F', fmt]);
      if (fmt === 'qcow2') assert.equal(qemu('qemu-img', t.dir, ['check', out]).status, 0, `check ${out}`);
    }
  } finally {
    t.cleanup();
  }
});

test('convert into a fresh raw image in bulk (the addon copy engine) writes what qemu-img writes, through compressed clusters, zero blocks inside data, a backing chain and an odd size, and the same with VDISK_NO_BULK_COPY=1', async () => {
  const t = tempDir();
  try {
    const size = 100 * 1024 * 1024 + 4096 + 512;
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'base.qcow2', String(size)]);
    qemu('qemu-io', t.dir, ['-f', 'qcow2', '-c', 'write -P 7 0 3M', '-c', 'write -P 8 90M 10M', 'base.qcow2']);
    // A compressed source: its clusters are not plain host ranges and go through the copy loop.
    qemu('qemu-img', t.dir, ['convert', '-c', '-f', 'qcow2', '-O', 'qcow2', 'base.qcow2', 'comp.qcow2']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', '-b', 'comp.qcow2', '-F', 'qcow2', 'top.qcow2']);
    const writes = ['write -P 1 1M 5M', 'write -P 0 2M 12k', 'write -z 4M 64k', 'write -P 3 70M 66M', `write -P 4 ${size - 4608} 4608`];
    qemu('qemu-io', t.dir, ['-f', 'qcow2', ...writes.flatMap((w) => ['-c', w]), 'top.qcow2']);
    const q = qemu('qemu-img', t.dir, ['convert', '-f', 'qcow2', '-O', 'raw', 'top.qcow2', 'q.raw']);
    assert.equal(q.status, 0, q.stderr);
    const qmap = qemu('qemu-img', t.dir, ['map', '--output=json', '-f', 'raw', 'q.raw']).stdout;
    for (const [name, env] of [['v.raw', undefined], ['w.raw', '1']] as const) {
      const saved = process.env['VDISK_NO_BULK_COPY'];
      if (env === undefined) delete process.env['VDISK_NO_BULK_COPY'];
      else process.env['VDISK_NO_BULK_COPY'] = env;
      try {
        const r = await vdisk(t.dir, ['convert', '-f', 'qcow2', '-O', 'raw', 'top.qcow2', name]);
        assert.deepEqual(r, { stdout: '', stderr: '', status: 0 });
      } finally {
        if (saved === undefined) delete process.env['VDISK_NO_BULK_COPY'];
        else process.env['VDISK_NO_BULK_COPY'] = saved;
      }
      same(t.dir, 'q.raw', name, ['-f', 'raw', '-F', 'raw']);
      assert.equal(qemu('qemu-img', t.dir, ['map', '--output=json', '-f', 'raw', name]).stdout, qmap, `${name}: allocated where qemu-img's copy is`);
      assert.equal(statSync(join(t.dir, name)).size, statSync(join(t.dir, 'q.raw')).size);
    }
  } finally {
    t.cleanup();
  }
});

test('convert into a fresh qcow2 image in bulk (read and written on the addon threads) holds what qemu-img writes, allocated where qemu-img allocates, for several cluster sizes, -S sizes, preallocation and -n, and lays 64 KiB clusters out as the copy loop does', async () => {
  const t = tempDir();
  try {
    const size = 40 * 1024 * 1024 + 4096 + 512;
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'raw', 's.raw', String(size)]);
    // Data at unaligned offsets, zero blocks and zero clusters inside data, and data up to the odd end.
    const writes = ['write -P 1 5000 300k', 'write -P 0 100k 4k', 'write -P 0 128k 64k', 'write -P 2 3M 9M', 'write -P 3 20M 1k', `write -P 4 ${size - 70000} 70000`];
    qemu('qemu-io', t.dir, ['-f', 'raw', ...writes.flatMap((w) => ['-c', w]), 's.raw']);
    // Allocation byte by byte: neighbouring entries with the same flags merged (entries also split where host offsets do not follow).
    const flags = (m: string): string => {
      const out: Array<{ start: number; length: number; data: boolean; zero: boolean }> = [];
      for (const e of JSON.parse(m) as Array<{ start: number; length: number; data: boolean; zero: boolean }>) {
        const last = out[out.length - 1];
        if (last && last.data === e.data && last.zero === e.zero && last.start + last.length === e.start) last.length += e.length;
        else out.push({ start: e.start, length: e.length, data: e.data, zero: e.zero });
      }
      return JSON.stringify(out);
    };
    const map = (file: string): string => qemu('qemu-img', t.dir, ['map', '--output=json', '-f', 'qcow2', file]).stdout;
    const cases: Array<readonly string[]> = [[], ['-o', 'cluster_size=4096'], ['-o', 'cluster_size=2M'], ['-o', 'cluster_size=512'], ['-S', '64k'], ['-S', '1k'], ['-o', 'preallocation=metadata']];
    for (const extra of cases) {
      const q = qemu('qemu-img', t.dir, ['convert', ...extra, '-f', 'raw', '-O', 'qcow2', 's.raw', 'q.qcow2']);
      assert.equal(q.status, 0, q.stderr);
      const outputs: string[] = [];
      for (const env of [undefined, '1']) {
        const out = env === undefined ? 'v.qcow2' : 'w.qcow2';
        const saved = process.env['VDISK_NO_BULK_COPY'];
        if (env === undefined) delete process.env['VDISK_NO_BULK_COPY'];
        else process.env['VDISK_NO_BULK_COPY'] = env;
        try {
          const r = await vdisk(t.dir, ['convert', ...extra, '-f', 'raw', '-O', 'qcow2', 's.raw', out]);
          assert.deepEqual(r, { stdout: '', stderr: '', status: 0 }, extra.join(' '));
        } finally {
          if (saved === undefined) delete process.env['VDISK_NO_BULK_COPY'];
          else process.env['VDISK_NO_BULK_COPY'] = saved;
        }
        same(t.dir, 's.raw', out, ['-f', 'raw', '-F', 'qcow2']);
        const check = qemu('qemu-img', t.dir, ['check', out]);
        assert.equal(check.status, 0, `${extra.join(' ')} ${out}: ${check.stdout}`);
        assert.equal(flags(map(out)), flags(map('q.qcow2')), `${extra.join(' ')} ${out}: allocated where qemu-img allocates`);
        outputs.push(map(out));
      }
      // With other cluster sizes a copy request can span two L2 tables, and the loop allocates both tables before their data.
      if (extra.length === 0) assert.equal(outputs[0], outputs[1], 'the same layout in bulk as through the copy loop');
    }
    // -n into an empty image the caller says reads as zeros.
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', 'n.qcow2', String(size)]);
    const r = await vdisk(t.dir, ['convert', '-n', '--target-is-zero', '-f', 'raw', '-O', 'qcow2', 's.raw', 'n.qcow2']);
    assert.equal(r.status, 0, r.stderr);
    same(t.dir, 's.raw', 'n.qcow2', ['-f', 'raw', '-F', 'qcow2']);
    assert.equal(qemu('qemu-img', t.dir, ['check', 'n.qcow2']).status, 0);
    // A qcow2 chain with compressed clusters: plain clusters in bulk, compressed ones through the loop, in the same clusters.
    qemu('qemu-img', t.dir, ['convert', '-c', '-f', 'raw', '-O', 'qcow2', 's.raw', 'c.qcow2']);
    qemu('qemu-img', t.dir, ['create', '-q', '-f', 'qcow2', '-b', 'c.qcow2', '-F', 'qcow2', 'top.qcow2']);
    qemu('qemu-io', t.dir, ['-f', 'qcow2', '-c', 'write -P 7 3M 100k', '-c', 'write -P 8 3200k 64k', '-c', 'write -z 10M 1M', 'top.qcow2']);
    const c = await vdisk(t.dir, ['convert', '-f', 'qcow2', '-O', 'qcow2', 'top.qcow2', 'flat.qcow2']);
    assert.equal(c.status, 0, c.stderr);
    same(t.dir, 'top.qcow2', 'flat.qcow2', ['-f', 'qcow2', '-F', 'qcow2']);
    assert.equal(qemu('qemu-img', t.dir, ['check', 'flat.qcow2']).status, 0);
    qemu('qemu-img', t.dir, ['convert', '-f', 'qcow2', '-O', 'qcow2', 'top.qcow2', 'qflat.qcow2']);
    assert.equal(flags(map('flat.qcow2')), flags(map('qflat.qcow2')), 'the chain: allocated where qemu-img allocates');
  } finally {
    t.cleanup();
  }
});
