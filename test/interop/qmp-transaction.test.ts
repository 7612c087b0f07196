// QMP transaction over the dirty bitmap actions and abort, with qemu-storage-daemon 7.2 as the oracle: the
// same transactions (all applied, rolled back by abort or by a failing action, refused whole for a malformed
// one) against both daemons; every reply and the node's bitmaps after each (name, recording, count) must match.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { run } from './support/serve-process.js';
import { errorOf, MiB, ok, tmpDir, withDaemon } from './support/e2e-daemon.js';
import { againstQsd, outcome, type QmpPeer, type Transcript } from './support/qsd.js';

type Action = Record<string, unknown>;
const act = (type: string, data?: unknown): Action => (data === undefined ? { type } : { type, data });
const add = (name: string, extra: Record<string, unknown> = {}): Action => act('block-dirty-bitmap-add', { node: 'a', name, ...extra });

/** Transactions, each with its properties (or none), in the order they run. */
const TRANSACTIONS: ReadonlyArray<readonly [unknown, unknown?]> = [
  [[act('abort', {})]],
  [[act('abort')]],
  // Applied whole: a new bitmap takes b0's bits, and b0 stops recording.
  [[add('c1'), act('block-dirty-bitmap-merge', { node: 'a', target: 'c1', bitmaps: ['b0'] }), act('block-dirty-bitmap-disable', { node: 'a', name: 'b0' })]],
  // Rolled back by abort: c2 not added, c1's bits back, b0 neither recording nor removed.
  [[add('c2'), act('block-dirty-bitmap-clear', { node: 'a', name: 'c1' }), act('block-dirty-bitmap-enable', { node: 'a', name: 'b0' }), act('block-dirty-bitmap-remove', { node: 'a', name: 'b0' }), act('abort', {})]],
  // Rolled back by a failing action.
  [[add('c3'), act('block-dirty-bitmap-merge', { node: 'a', target: 'c3', bitmaps: ['nope'] })]],
  [[act('block-dirty-bitmap-remove', { node: 'a', name: 'c1' }), add('c1')]],
  [[add('c4'), add('c4')]],
  [[add('d5'), act('block-dirty-bitmap-remove', { node: 'a', name: 'd5' })]],
  [[act('block-dirty-bitmap-remove', { node: 'a', name: 'nope' })]],
  [[add('c5')], { 'completion-mode': 'individual' }],
  [[add('c6')], { 'completion-mode': 'grouped' }],
  [[add('c6')], { 'completion-mode': 'bogus' }],
  [[add('c6')], { 'completion-mode': 5 }],
  [[add('c6')], { x: 1 }],
  [[add('c6')], 'str'],
  [[]],
  ['notalist'],
  // Malformed: refused before any action runs.
  [[act('bogus', {})]],
  [['str']],
  [[{ type: 5, data: {} }]],
  [[{ data: {} }]],
  [[act('block-dirty-bitmap-add', 'x')]],
  [[act('block-dirty-bitmap-add')]],
  [[act('block-dirty-bitmap-add', { node: 'a' })]],
  [[{ type: 'block-dirty-bitmap-add', data: { node: 'a', name: 'c6' }, x: 1 }]],
  [[add('c6'), act('block-dirty-bitmap-merge', { node: 'a', target: 'c6', bitmaps: [{ node: 'a' }] })]],
  [[act('block-dirty-bitmap-merge', { node: 'a', target: 'b0', bitmaps: 'x' })]],
  [[add('c6', { granularity: 1000 })]],
  [[act('abort', { x: 1 })]],
];

async function script(peer: QmpPeer, dir: string, nbdPath: string): Promise<Transcript> {
  const seen: Transcript = [];
  ok(await peer.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: { driver: 'file', filename: `${dir}/a.qcow2` } }));
  ok(await peer.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdPath } } }));
  ok(await peer.qmp.execute('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'a', name: 'a', writable: true }));
  ok(await peer.qmp.execute('block-dirty-bitmap-add', { node: 'a', name: 'b0' }));
  run('qemu-io', ['-f', 'raw', '-c', 'write 0 64k', '-c', 'write 1M 128k', `nbd+unix:///a?socket=${nbdPath}`]);
  for (const [actions, properties] of TRANSACTIONS) {
    const args = properties === undefined ? { actions } : { actions, properties };
    const reply = outcome(await peer.qmp.execute('transaction', args));
    const nodes = ok(await peer.qmp.execute('query-named-block-nodes', { flat: true })) as Array<Record<string, unknown>>;
    const bitmaps = nodes.find((n) => n['node-name'] === 'a')?.['dirty-bitmaps'] ?? [];
    seen.push([args, reply, bitmaps]);
  }
  return seen;
}

test('transaction of bitmap actions: applied whole or rolled back whole, every reply and the bitmaps after each as qemu-storage-daemon', async () => {
  const { vdisk, qsd } = await againstQsd((dir) => run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/a.qcow2`, String(16 * MiB)]), script);
  assert.equal(vdisk, qsd);
  assert.match(vdisk, /Transaction aborted using Abort action/);
  assert.match(vdisk, /"count": 196608/);
});

test('transaction: an action vdisk does not take (blockdev-snapshot-sync) is refused by name before any action runs', async () => {
  const dir = tmpDir();
  try {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/a.qcow2`, String(16 * MiB)]);
    await withDaemon(dir, async (d) => {
      ok(await d.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'a', file: { driver: 'file', filename: `${dir}/a.qcow2` } }));
      const reply = await d.qmp.execute('transaction', {
        actions: [add('n1'), act('blockdev-snapshot-sync', { 'node-name': 'a', 'snapshot-file': `${dir}/s.qcow2`, format: 'qcow2' })],
      });
      assert.match(errorOf(reply), /Transaction action 'blockdev-snapshot-sync' is not supported/);
      const nodes = ok(await d.qmp.execute('query-named-block-nodes', { flat: true })) as Array<Record<string, unknown>>;
      assert.equal(nodes.find((n) => n['node-name'] === 'a')?.['dirty-bitmaps'], undefined);
      assert.equal(fs.existsSync(`${dir}/s.qcow2`), false);
      assert.equal(await d.quit(), 0);
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
