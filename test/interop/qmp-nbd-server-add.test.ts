// nbd-server-add / nbd-server-remove, QEMU's older NBD-only export commands (deprecated, still in
// qemu-storage-daemon 7.2), with qsd as the oracle: the same script against both daemons, every reply,
// the exports listed, and what nbdinfo sees of each export must match.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { run, runStatus } from './support/serve-process.js';
import { MiB, ok } from './support/e2e-daemon.js';
import { againstQsd, outcome, removeExportWhenIdle, type QmpPeer, type Transcript } from './support/qsd.js';

/** What a client sees of an export: its name, whether it is read-only, its description and metadata contexts. */
function exportSeen(uri: string): unknown {
  const r = runStatus('nbdinfo', ['--json', uri]);
  if (r.status !== 0) return { failed: r.status };
  const e = (JSON.parse(r.stdout) as { exports: Array<Record<string, unknown>> }).exports[0] ?? {};
  return { name: e['export-name'], readOnly: e['is_read_only'], description: e['description'] ?? null, contexts: e['contexts'] };
}

async function script(peer: QmpPeer, dir: string, nbdPath: string): Promise<Transcript> {
  const seen: Transcript = [];
  const step = async (name: string, args?: Record<string, unknown>): Promise<void> => {
    seen.push([name, args ?? {}, outcome(await peer.qmp.execute(name, args))]);
  };
  const uri = (name: string): string => `nbd+unix:///${name}?socket=${nbdPath}`;
  ok(await peer.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: { driver: 'file', filename: `${dir}/a.qcow2` } }));
  await step('nbd-server-add', { device: 'a' });
  await step('nbd-server-start', { addr: { type: 'unix', data: { path: nbdPath } } });
  await step('block-dirty-bitmap-add', { node: 'a', name: 'bm' });
  await step('nbd-server-add', { device: 'a' });
  seen.push(['client', exportSeen(uri('a'))]);
  await step('nbd-server-add', { device: 'a' });
  await step('nbd-server-add', { device: 'a', name: 'w', writable: true, description: 'hello', bitmap: 'bm' });
  seen.push(['client', exportSeen(uri('w'))]);
  // Written through the export named by nbd-server-add, and read back through the other.
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 64k', uri('w')]);
  seen.push(['read', run('qemu-io', ['-f', 'raw', '-r', '-c', 'read -P 0x5a 1M 64k', uri('a')]).split('\n')[0]]);
  await step('nbd-server-add', { device: 'a', name: 'w2', bitmap: 'bm' });
  await step('nbd-server-add', { device: 'nope', name: 'n' });
  await step('nbd-server-add', { device: 'a', name: 'n', bitmap: 'nope' });
  await step('nbd-server-add', { device: 'a', name: 'x', extra: 1 });
  await step('query-block-exports');
  await step('nbd-server-remove', { name: 'nope' });
  await step('nbd-server-remove', { name: 'x', mode: 'bogus' });
  seen.push(['nbd-server-remove', { name: 'w' }, outcome(await removeExportWhenIdle(peer, 'nbd-server-remove', { name: 'w' }))]);
  seen.push(['client', exportSeen(uri('w'))]);
  await step('nbd-server-remove', { name: 'a', mode: 'hard' });
  await step('nbd-server-remove', { name: 'a' });
  await step('query-block-exports');
  await step('nbd-server-stop');
  await step('nbd-server-remove', { name: 'a' });
  return seen;
}

test('nbd-server-add and nbd-server-remove: every reply, the exports listed and what nbdinfo sees match qemu-storage-daemon', async () => {
  const { vdisk, qsd } = await againstQsd((dir) => run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/a.qcow2`, String(16 * MiB)]), script);
  assert.equal(vdisk, qsd);
  assert.match(vdisk, /qemu:dirty-bitmap:bm/);
  assert.match(vdisk, /read 65536\/65536 bytes/);
});
