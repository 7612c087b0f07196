import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { run, runStatus, startServer } from './support/serve-process.js';

function tmp(): string {
  return fs.mkdtempSync(os.tmpdir() + '/vdisk-');
}

function makeImage(file: string): void {
  run('qemu-img', ['create', '-q', '-f', 'raw', file, '8M']);
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x3c 1M 64k', file]);
}

test('TLS-PSK: nbdinfo and qemu-img connect with the keys file; plain clients are refused', async () => {
  const dir = tmp();
  try {
    fs.writeFileSync(`${dir}/keys.psk`, `qemu:${randomBytes(32).toString('hex')}\n`);
    makeImage(`${dir}/d.raw`);
    const sock = `${dir}/s.sock`;
    const v = await startServer(['vdisk', '--object', `tls-creds-psk,id=tls0,dir=${dir},endpoint=server`, '--tls-creds', 'tls0', '-k', sock, '-f', 'raw', '-t', `${dir}/d.raw`], sock);
    try {
      const uri = `nbds+unix://qemu@/?socket=${sock}&tls-psk-file=${dir}/keys.psk`;
      assert.equal(run('nbdinfo', ['--size', uri]).trim(), String(8 * 1024 * 1024));
      assert.match(run('nbdinfo', ['--map', uri]), /data/);
      const plain = runStatus('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`]);
      assert.notEqual(plain.status, 0);
      assert.match(plain.stderr, /TLS/);
      const opts = `driver=nbd,server.type=unix,server.path=${sock},tls-creds=tls0`;
      const obj = `tls-creds-psk,id=tls0,dir=${dir},endpoint=client`;
      run('qemu-io', ['--object', obj, '--image-opts', opts, '-c', 'read -P 0x3c 1M 64k', '-c', 'write -P 0x3d 2M 4k']);
      run('qemu-img', ['compare', '--object', obj, '--image-opts', opts, `driver=file,filename=${dir}/d.raw`]);
    } finally {
      assert.equal(await v.stop(), 0);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('TLS-x509: nbdinfo and qemu-img verify the server certificate against the CA', async () => {
  const dir = tmp();
  try {
    const x = `${dir}/server`;
    fs.mkdirSync(x);
    run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${dir}/ca-key.pem`, '-out', `${x}/ca-cert.pem`, '-days', '2', '-subj', '/CN=vdisk test CA']);
    run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${x}/server-key.pem`, '-out', `${dir}/s.csr`, '-subj', '/CN=localhost']);
    fs.writeFileSync(`${dir}/ext`, 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
    run('openssl', ['x509', '-req', '-in', `${dir}/s.csr`, '-CA', `${x}/ca-cert.pem`, '-CAkey', `${dir}/ca-key.pem`, '-CAcreateserial', '-out', `${x}/server-cert.pem`, '-days', '2', '-extfile', `${dir}/ext`]);
    const client = `${dir}/client`;
    fs.mkdirSync(client);
    fs.copyFileSync(`${x}/ca-cert.pem`, `${client}/ca-cert.pem`);
    makeImage(`${dir}/d.raw`);
    const sock = `${dir}/s.sock`;
    const v = await startServer(['vdisk', '--object', `tls-creds-x509,id=tls0,dir=${x},endpoint=server,verify-peer=off`, '--tls-creds', 'tls0', '-k', sock, '-f', 'raw', '-t', `${dir}/d.raw`], sock);
    try {
      // Over a unix socket there is no host name to check: libnbd needs tls-hostname, qemu none.
      assert.equal(run('nbdinfo', ['--size', `nbds+unix:///?socket=${sock}&tls-certificates=${client}&tls-hostname=localhost`]).trim(), String(8 * 1024 * 1024));
      const obj = `tls-creds-x509,id=tls0,dir=${client},endpoint=client`;
      run('qemu-img', ['compare', '--object', obj, '--image-opts', `driver=nbd,server.type=unix,server.path=${sock},tls-creds=tls0,tls-hostname=localhost`, `driver=file,filename=${dir}/d.raw`]);
      assert.notEqual(runStatus('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`]).status, 0);
    } finally {
      assert.equal(await v.stop(), 0);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
