import { test } from 'node:test';
import assert from 'node:assert/strict';
import { run } from '../../../src/cli/program.js';
import { makeChain, readAll } from '../jobs/job-fixtures.js';
import { withQmp } from '../daemon/qmp-fixture.js';

const MiB = 1024 * 1024;

async function vdisk(argv: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const status = await run(argv, { out: { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) } });
  return { status, stdout, stderr };
}

test('vdisk job commit -w waits for ready with progress, then list, complete and wait finish the merge', async () => {
  await withQmp(async ({ graph, socket }) => {
    const chain = await makeChain(2 * MiB, 2, (i, d) => d.set(i * MiB, MiB, 'data', 0x30 + i));
    graph.add('disk', chain.top);
    const model = await readAll(chain.top);
    const started = await vdisk(['job', 'commit', '--qmp', socket, '-d', 'disk', '--job-id', 'j', '-p']);
    assert.equal(started.status, 0, started.stderr);
    assert.match(started.stdout, /\(100\.00\/100%\)\r\n$/);
    const list = await vdisk(['job', 'list', '--qmp', socket]);
    assert.match(list.stdout, /^j commit ready \d+\/\d+ speed=0\n$/);
    assert.equal((await vdisk(['job', 'set-speed', '--qmp', socket, 'j', '1M'])).status, 0);
    assert.equal((await vdisk(['job', 'complete', '--qmp', socket, 'j'])).status, 0);
    for (let i = 0; i < 100 && graph.replaced.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(await readAll(graph.node('disk')), model);
    const missing = await vdisk(['job', 'cancel', '--qmp', socket, 'nope']);
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /Block job 'nope' not found/);
  });
});
