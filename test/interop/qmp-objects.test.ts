// object-del and query-block, with qemu-storage-daemon 7.2 as the oracle: TLS credentials deleted while the
// NBD server that took them keeps serving over TLS, the id free for a new object; query-block lists nothing
// (qsd's BlockBackends are its exports', unnamed). Every reply and what a TLS client sees must match.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { run, runStatus } from './support/serve-process.js';
import { MiB, ok } from './support/e2e-daemon.js';
import { againstQsd, outcome, type QmpPeer, type Transcript } from './support/qsd.js';

/** One key for both runs, so the two transcripts can be compared. */
const KEY = randomBytes(32).toString('hex');

function prepare(dir: string): void {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/a.qcow2`, String(16 * MiB)]);
  fs.mkdirSync(`${dir}/creds`);
  fs.writeFileSync(`${dir}/creds/keys.psk`, `qemu:${KEY}\n`);
}

async function script(peer: QmpPeer, dir: string, nbdPath: string): Promise<Transcript> {
  const seen: Transcript = [];
  const step = async (name: string, args?: Record<string, unknown>): Promise<void> => {
    seen.push([name, args ?? {}, outcome(await peer.qmp.execute(name, args))]);
  };
  const client = (): unknown => {
    const r = runStatus('nbdinfo', ['--size', `nbds+unix://qemu@/a?socket=${nbdPath}&tls-psk-file=${dir}/creds/keys.psk`]);
    return r.status === 0 ? r.stdout.trim() : { failed: r.status };
  };
  const creds = { 'qom-type': 'tls-creds-psk', id: 't0', dir: `${dir}/creds`, endpoint: 'server' };
  ok(await peer.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: { driver: 'file', filename: `${dir}/a.qcow2` } }));
  await step('object-add', creds);
  await step('nbd-server-start', { addr: { type: 'unix', data: { path: nbdPath } }, 'tls-creds': 't0' });
  await step('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'a', name: 'a' });
  await step('query-block');
  await step('object-del', { id: 't0' });
  seen.push(['client', client()]);
  await step('object-del', { id: 't0' });
  await step('object-del', { id: 'nope' });
  await step('object-del', {});
  await step('object-add', creds);
  seen.push(['client', client()]);
  return seen;
}

test('object-del and query-block: every reply, and TLS clients served after the credentials are deleted, as qemu-storage-daemon', async () => {
  const { vdisk, qsd } = await againstQsd(prepare, script);
  assert.equal(vdisk, qsd);
  assert.match(vdisk, /"16777216"/);
  assert.match(vdisk, /object 't0' not found/);
});
