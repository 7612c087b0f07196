// block-dirty-bitmap-merge and exported bitmaps being busy, with qemu-storage-daemon 7.2 as the oracle:
// the same QMP script (bitmaps added, written through an NBD export, merged, exported, then touched while
// exported) runs against `vdisk serve --qmp` and against qsd; every reply, the nodes' dirty-bitmaps in
// query-named-block-nodes and the merged bitmap as `nbdinfo --map` reads it through the export must match.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { run } from './support/serve-process.js';
import { MiB, ok } from './support/e2e-daemon.js';
import { againstQsd, outcome, removeExportWhenIdle, type QmpPeer, type Transcript } from './support/qsd.js';

type Step = readonly [string, Record<string, unknown>];

/** The dirty-bitmaps of every node, by node-name, in the order listed. */
function bitmapsByNode(nodes: unknown): Array<[unknown, unknown]> {
  assert.ok(Array.isArray(nodes));
  return nodes.map((n: Record<string, unknown>) => [n['node-name'], n['dirty-bitmaps'] ?? null]);
}

const MERGE_ERRORS: readonly Step[] = [
  ['block-dirty-bitmap-merge', { node: 'a', target: 'nope', bitmaps: ['b0'] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: ['nope'] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: [{ node: 'zz', name: 'x' }] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: [{ node: 'b', name: 'x' }] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: [{ node: 'b', name: 'o' }] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: [{ node: 'b' }] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: [{ node: 'b', name: 7 }] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: [{ node: 'b', name: 'o', x: 1 }] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: [5] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: 'b0' }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2' }],
  ['block-dirty-bitmap-merge', { node: 'zz', target: 'b2', bitmaps: ['b0'] }],
  // A failing source leaves the target as it was, even after good ones.
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: ['b0', 'nope'] }],
  // A missing member is reported before an unexpected one, as QEMU's input visitor does.
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: [{ node: 'a', x: 1 }] }],
  ['block-dirty-bitmap-add', { node: 'a', x: 1 }],
  ['block-dirty-bitmap-remove', { node: 'zz', name: 'b0' }],
  ['block-dirty-bitmap-clear', { node: 'zz', name: 'b0' }],
];

const WHILE_EXPORTED: readonly Step[] = [
  ['block-export-add', { type: 'nbd', id: 'y', 'node-name': 'a', name: 'y', bitmaps: ['b2'] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: ['b0'] }],
  ['block-dirty-bitmap-merge', { node: 'a', target: 'b0', bitmaps: ['b2'] }],
  ['block-dirty-bitmap-clear', { node: 'a', name: 'b2' }],
  ['block-dirty-bitmap-enable', { node: 'a', name: 'b2' }],
  ['block-dirty-bitmap-disable', { node: 'a', name: 'b2' }],
  ['block-dirty-bitmap-remove', { node: 'a', name: 'b2' }],
];

/**
 * The script, run against one daemon whose NBD server listens at `nbdPath`:
 * what every step answered, the bitmaps listed at two points, and the merged
 * bitmap read through an export.
 */
async function script(peer: QmpPeer, dir: string, nbdPath: string): Promise<Transcript> {
  const seen: Transcript = [];
  const step = async (name: string, args: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const reply = await peer.qmp.execute(name, args);
    seen.push([name, args, outcome(reply)]);
    return reply;
  };
  const nodes = async (): Promise<void> => {
    const listed = bitmapsByNode(ok(await peer.qmp.execute('query-named-block-nodes', { flat: true })));
    seen.push(['bitmaps', listed]);
    // Bit for bit: QEMU's hash of each bitmap's bits.
    for (const [node, bitmaps] of listed) {
      for (const b of (bitmaps ?? []) as Array<Record<string, unknown>>) {
        seen.push(['sha256', node, b['name'], outcome(await peer.qmp.execute('x-debug-block-dirty-bitmap-sha256', { node, name: b['name'] }))]);
      }
    }
  };
  const uri = (name: string): string => `nbd+unix:///${name}?socket=${nbdPath}`;
  ok(await peer.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdPath } } }));
  for (const [n, file] of [['a', 'a.qcow2'], ['b', 'b.qcow2']] as const) {
    ok(await peer.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': n, file: { driver: 'file', filename: `${dir}/${file}` } }));
  }
  ok(await peer.qmp.execute('block-export-add', { type: 'nbd', id: 'e', 'node-name': 'a', name: 'a', writable: true }));
  await step('block-dirty-bitmap-add', { node: 'a', name: 'b0' });
  await step('block-dirty-bitmap-add', { node: 'a', name: 'b1', granularity: 4096 });
  await step('block-dirty-bitmap-add', { node: 'a', name: 'b2', disabled: true });
  await step('block-dirty-bitmap-add', { node: 'b', name: 'o' });
  // b0 (64 KiB granules) and b1 (4 KiB) record these; then only b0.
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x61 100k 4k', '-c', 'write -P 0x62 4M 8k', '-c', 'write -P 0x63 20M 1M', uri('a')]);
  await step('block-dirty-bitmap-disable', { node: 'a', name: 'b1' });
  run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x64 40M 64k', '-c', 'write -P 0x65 63M 512', uri('a')]);
  for (const [name, args] of MERGE_ERRORS) await step(name, args);
  await nodes();
  // Into the disabled b2: b1's fine granules land as whole 64 KiB ones, and merging b2 into itself changes nothing.
  await step('block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: ['b1'] });
  await step('block-dirty-bitmap-merge', { node: 'a', target: 'b2', bitmaps: ['b2', { node: 'a', name: 'b2' }] });
  await step('block-dirty-bitmap-merge', { node: 'a', target: 'b1', bitmaps: ['b0'] });
  await step('block-export-add', { type: 'nbd', id: 'x', 'node-name': 'a', name: 'x', bitmaps: ['b2'] });
  for (const b of ['b2']) seen.push(['map', b, run('nbdinfo', [`--map=qemu:dirty-bitmap:${b}`, uri('x')])]);
  await nodes();
  for (const [name, args] of WHILE_EXPORTED) await step(name, args);
  seen.push(['block-export-del', { id: 'x' }, outcome(await removeExportWhenIdle(peer, 'block-export-del', { id: 'x' }))]);
  await nodes();
  // Freed with its export: b1 (merged from b0, at 4 KiB) is exported and read too.
  await step('block-dirty-bitmap-clear', { node: 'a', name: 'b2' });
  await step('block-export-add', { type: 'nbd', id: 'z', 'node-name': 'a', name: 'z', bitmaps: ['b1'] });
  seen.push(['map', 'b1', run('nbdinfo', ['--map=qemu:dirty-bitmap:b1', uri('z')])]);
  seen.push(['block-export-del', { id: 'z' }, outcome(await removeExportWhenIdle(peer, 'block-export-del', { id: 'z' }))]);
  await step('block-dirty-bitmap-remove', { node: 'a', name: 'b2' });
  await nodes();
  return seen;
}

function makeImages(dir: string): void {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/a.qcow2`, String(64 * MiB)]);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', `${dir}/b.qcow2`, String(32 * MiB)]);
}

test('block-dirty-bitmap-merge and bitmaps busy while exported: every reply, the listed bitmaps and the merged bits read over NBD match qemu-storage-daemon', async () => {
  const { vdisk, qsd } = await againstQsd(makeImages, script);
  assert.equal(vdisk, qsd);
  // The script did exercise what it claims: merged bits were read, busy bitmaps were refused.
  assert.match(vdisk, /in use by another operation/);
  assert.match(vdisk, /dirty/);
});
