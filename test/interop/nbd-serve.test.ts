import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { spawn } from 'node:child_process';
import { run, runStatus, startServer } from './support/serve-process.js';

function tmp(): string {
  return fs.mkdtempSync(os.tmpdir() + '/vdisk-');
}

/** A 64 MiB raw image with data at a few places and holes elsewhere. */
function makeRaw(file: string): void {
  run('qemu-img', ['create', '-q', '-f', 'raw', file, '64M']);
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 64k', '-c', 'write -P 0x11 10M 4k', '-c', 'write -P 0x22 63M 1M', file]);
}

/** nbdinfo's JSON without the fields that name the server's socket. */
function infoJson(uri: string): unknown {
  const j = JSON.parse(run('nbdinfo', ['--json', uri])) as { exports: Array<Record<string, unknown>> };
  for (const e of j.exports) delete e['uri'];
  return j;
}

test('nbdinfo, nbdinfo --map and --map=qemu:allocation-depth see the same export as from qemu-nbd', async () => {
  const dir = tmp();
  try {
    makeRaw(`${dir}/a.raw`);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'raw', '-t', '-r', `${dir}/a.raw`], `${dir}/v.sock`);
    const q = await startServer(['qemu-nbd', '-A', '-k', `${dir}/q.sock`, '-f', 'raw', '-t', '-r', `${dir}/a.raw`], `${dir}/q.sock`);
    try {
      assert.deepEqual(infoJson(v.uri), infoJson(q.uri));
      assert.equal(run('nbdinfo', ['--map', v.uri]), run('nbdinfo', ['--map', q.uri]));
      assert.equal(run('nbdinfo', ['--map=qemu:allocation-depth', v.uri]), run('nbdinfo', ['--map=qemu:allocation-depth', q.uri]));
    } finally {
      assert.equal(await v.stop(), 0);
      await q.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('qemu-img convert and compare read the export as qemu-img reads the file', async () => {
  const dir = tmp();
  try {
    makeRaw(`${dir}/a.raw`);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'raw', '-t', '-r', `${dir}/a.raw`], `${dir}/v.sock`);
    try {
      run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', v.uri, `${dir}/out.qcow2`]);
      run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', `${dir}/a.raw`, `${dir}/out.qcow2`]);
      run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', v.uri, `${dir}/a.raw`]);
    } finally {
      assert.equal(await v.stop(), 0);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('qemu-io writes through the export land in the image; SIGTERM exits 0 and removes the socket', async () => {
  const dir = tmp();
  try {
    makeRaw(`${dir}/a.raw`);
    fs.copyFileSync(`${dir}/a.raw`, `${dir}/expected.raw`);
    const writes = ['write -P 0x5a 0 4k', 'write -P 0x66 1000 3000', 'write -z 1M 8k', 'discard 10M 4k', 'write -P 0x77 -f 20M 64k', 'flush'];
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'raw', '-t', `${dir}/a.raw`], `${dir}/v.sock`);
    try {
      run('qemu-io', ['-f', 'raw', ...writes.flatMap((c) => ['-c', c]), v.uri]);
      const read = run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x66 1000 3000', '-c', 'read -P 0 1M 8k', v.uri]);
      assert.doesNotMatch(read, /Pattern verification failed/);
    } finally {
      assert.equal(await v.stop(), 0);
    }
    assert.equal(fs.existsSync(`${dir}/v.sock`), false);
    // 'discard' is a hint: apply the same ops directly, but compare discarded range separately.
    run('qemu-io', ['-f', 'raw', ...writes.filter((c) => !c.startsWith('discard')).flatMap((c) => ['-c', c]), `${dir}/expected.raw`]);
    run('qemu-io', ['-f', 'raw', '-c', 'write -z 10M 4k', `${dir}/expected.raw`]);
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `${dir}/a.raw`, `${dir}/expected.raw`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('nbdcopy copies to and from the export', async () => {
  const dir = tmp();
  try {
    makeRaw(`${dir}/a.raw`);
    run('qemu-img', ['create', '-q', '-f', 'raw', `${dir}/b.raw`, '64M']);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'raw', '-t', '-e', '4', `${dir}/b.raw`], `${dir}/v.sock`);
    try {
      const info = JSON.parse(run('nbdinfo', ['--json', v.uri])) as { exports: Array<{ can_multi_conn: boolean }> };
      assert.equal(info.exports[0]?.can_multi_conn, true, 'one node serves every connection');
      run('nbdcopy', [`${dir}/a.raw`, v.uri]);
      run('nbdcopy', [v.uri, `${dir}/c.raw`]);
    } finally {
      assert.equal(await v.stop(), 0);
    }
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `${dir}/a.raw`, `${dir}/b.raw`]);
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', `${dir}/a.raw`, `${dir}/c.raw`]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('without --persistent the server exits 0 after its client leaves; --read-only refuses writes', async () => {
  const dir = tmp();
  try {
    makeRaw(`${dir}/a.raw`);
    const before = fs.readFileSync(`${dir}/a.raw`);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'raw', '-r', `${dir}/a.raw`], `${dir}/v.sock`);
    const w = runStatus('qemu-io', ['-f', 'raw', '-c', 'write 0 4k', v.uri]);
    assert.match(w.stdout + w.stderr, /Operation not permitted|Permission denied|read-only/i);
    assert.equal(await v.exited, 0);
    assert.equal(fs.existsSync(`${dir}/v.sock`), false);
    assert.ok(before.equals(fs.readFileSync(`${dir}/a.raw`)));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('an export name is required to match, as with qemu-nbd -x', async () => {
  const dir = tmp();
  try {
    makeRaw(`${dir}/a.raw`);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'raw', '-t', '-x', 'disk0', '-D', 'test disk', `${dir}/a.raw`], `${dir}/v.sock`);
    try {
      const list = run('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${dir}/v.sock`]);
      const j = JSON.parse(list) as { exports: Array<{ 'export-name': string; description?: string }> };
      assert.equal(j.exports[0]?.['export-name'], 'disk0');
      assert.equal(j.exports[0]?.description, 'test disk');
      assert.match(run('nbdinfo', ['--size', `nbd+unix:///disk0?socket=${dir}/v.sock`]), /^67108864/);
      assert.notEqual(runStatus('nbdinfo', ['--size', `nbd+unix:///other?socket=${dir}/v.sock`]).status, 0);
    } finally {
      assert.equal(await v.stop('SIGINT'), 0);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('with no image, serve creates the default image in VDISK_DATA_DIR and prints how to connect', async () => {
  const dir = tmp();
  try {
    const { spawn } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const main = fileURLToPath(new URL('./support/serve-main.js', import.meta.url));
    const proc = spawn(process.execPath, [main, '-k', `${dir}/v.sock`], { env: { ...process.env, VDISK_DATA_DIR: `${dir}/data` } });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    const deadline = Date.now() + 10000;
    while (!out.includes('Stop with') && Date.now() < deadline && proc.exitCode === null) await new Promise((r) => setTimeout(r, 20));
    assert.match(out, new RegExp(`nbd\\+unix:///\\?socket=${dir}/v\\.sock`));
    assert.match(out, /qemu-img info /);
    const size = run('nbdinfo', ['--size', `nbd+unix:///?socket=${dir}/v.sock`]);
    assert.equal(size.trim(), String(1024 ** 3));
    // The default export is persistent: it is still up after a client left.
    assert.equal(proc.exitCode, null);
    proc.kill('SIGINT');
    assert.equal(await exited, 0);
    assert.ok(fs.readdirSync(`${dir}/data`).some((f) => f.startsWith('default.')));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('--fork returns once the server listens and --pid-file names it, as qemu-nbd --fork', async () => {
  const dir = tmp();
  try {
    makeRaw(`${dir}/a.raw`);
    const { fileURLToPath } = await import('node:url');
    const main = fileURLToPath(new URL('./support/serve-main.js', import.meta.url));
    run(process.execPath, [main, '--fork', '--pid-file', `${dir}/pid`, '-k', `${dir}/v.sock`, '-f', 'raw', '-r', `${dir}/a.raw`]);
    const pid = Number(fs.readFileSync(`${dir}/pid`, 'utf8'));
    assert.ok(pid > 0);
    assert.equal(run('nbdinfo', ['--size', `nbd+unix:///?socket=${dir}/v.sock`]).trim(), String(64 * 1024 * 1024));
    // Not persistent: the background server leaves after its client, removing socket and pid file.
    const deadline = Date.now() + 5000;
    while ((fs.existsSync(`${dir}/pid`) || fs.existsSync(`${dir}/v.sock`)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.equal(fs.existsSync(`${dir}/v.sock`), false);
    assert.equal(fs.existsSync(`${dir}/pid`), false);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('serving over TCP works with nbd:// URIs', async () => {
  const dir = tmp();
  try {
    makeRaw(`${dir}/a.raw`);
    const { spawn } = await import('node:child_process');
    const { fileURLToPath } = await import('node:url');
    const net = await import('node:net');
    const port = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const a = s.address();
        s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
      });
    });
    const main = fileURLToPath(new URL('./support/serve-main.js', import.meta.url));
    const proc = spawn(process.execPath, [main, '-b', '127.0.0.1', '-p', String(port), '-f', 'raw', '-t', `${dir}/a.raw`], { stdio: 'ignore' });
    const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    const uri = `nbd://127.0.0.1:${port}/`;
    const deadline = Date.now() + 10000;
    let size = '';
    while (Date.now() < deadline) {
      const r = runStatus('nbdinfo', ['--size', uri]);
      if (r.status === 0) {
        size = r.stdout.trim();
        break;
      }
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(size, String(64 * 1024 * 1024));
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri, `${dir}/a.raw`]);
    proc.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('nbdcopy reading a qcow2 chain into a slow pipe gets the bytes qemu-img reads (data replies sent from the page cache, between zero, backing and hole replies)', async () => {
  const dir = tmp();
  try {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/base.qcow2`, '32M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 12M', '-c', 'write -P 0x22 20M 4M', `${dir}/base.qcow2`]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', `${dir}/top.qcow2`]);
    const writes = [1, 3, 5, 7, 9, 13, 17, 21].map((m) => ['-c', `write -P ${m} ${m}M 768k`]).flat();
    run('qemu-io', ['-f', 'qcow2', ...writes, '-c', 'write -z 4M 1M', '-c', 'write -P 0x33 6291968 70000', `${dir}/top.qcow2`]);
    run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', `${dir}/top.qcow2`, `${dir}/want.raw`]);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'qcow2', '-t', '-e', '4', `${dir}/top.qcow2`], `${dir}/v.sock`);
    try {
      for (const requestSize of ['262144', '65536']) {
        const copy = spawn('nbdcopy', [`--request-size=${requestSize}`, v.uri, '-'], { stdio: ['ignore', 'pipe', 'inherit'] });
        const chunks: Buffer[] = [];
        let n = 0;
        copy.stdout.on('data', (c: Buffer) => {
          chunks.push(c);
          // Stall now and then, as a consumer slower than the server would.
          if (++n % 8 === 0) {
            copy.stdout.pause();
            setTimeout(() => copy.stdout.resume(), 3);
          }
        });
        const status = await new Promise<number | null>((r) => copy.once('close', r));
        assert.equal(status, 0, `nbdcopy --request-size=${requestSize}`);
        assert.ok(Buffer.concat(chunks).equals(fs.readFileSync(`${dir}/want.raw`)), `request size ${requestSize}: bytes as qemu-img reads them`);
      }
    } finally {
      assert.equal(await v.stop(), 0);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a raw file whose size is not a multiple of 512 reads as zeros past its end through the export (sendfile stops at the end of the file, the rest is read)', async () => {
  const dir = tmp();
  try {
    const bytes = Buffer.alloc(1000);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7 + 3) & 0xff;
    fs.writeFileSync(`${dir}/odd.raw`, bytes);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'raw', '-t', `${dir}/odd.raw`], `${dir}/v.sock`);
    try {
      run('nbdcopy', [v.uri, `${dir}/out.bin`]);
    } finally {
      assert.equal(await v.stop(), 0);
    }
    assert.ok(fs.readFileSync(`${dir}/out.bin`).equals(Buffer.concat([bytes, Buffer.alloc(24)])), 'the file, then zeros to 1024');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('nbdcopy writing 4 KiB, 256 KiB and 32 MiB requests into a qcow2 export: every byte lands (payloads read into the server arenas, in place or gathered) and the image checks clean', async () => {
  const dir = tmp();
  try {
    const { randomBytes } = await import('node:crypto');
    const size = 48 * 1024 * 1024;
    const sources = ['4096', '262144', '33554432'].map((requestSize, i) => {
      const file = `${dir}/src${i}.raw`;
      fs.writeFileSync(file, randomBytes(size));
      return { requestSize, file };
    });
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/t.qcow2`, String(size)]);
    const v = await startServer(['vdisk', '-k', `${dir}/v.sock`, '-f', 'qcow2', '-t', '-e', '4', `${dir}/t.qcow2`], `${dir}/v.sock`);
    try {
      for (const s of sources) {
        run('nbdcopy', [`--request-size=${s.requestSize}`, '--requests=16', s.file, v.uri]);
        run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', s.file, v.uri]);
      }
    } finally {
      assert.equal(await v.stop(), 0);
    }
    const last = sources[sources.length - 1];
    assert.ok(last);
    run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', last.file, `${dir}/t.qcow2`]);
    assert.match(run('qemu-img', ['check', `${dir}/t.qcow2`]), /No errors were found/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
