import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeChain, readAll } from '../jobs/job-fixtures.js';
import { waitEvent, withQmp } from './qmp-fixture.js';

const MiB = 1024 * 1024;

test('block-commit on the active node: READY, query-block-jobs, block-job-complete pivots the device', async () => {
  await withQmp(async ({ client, graph, events }) => {
    const chain = await makeChain(2 * MiB, 2, (i, d) => d.set(i * MiB, MiB, 'data', 0x10 + i));
    graph.add('disk', chain.top);
    const model = await readAll(chain.top);
    assert.deepEqual(await client.execute('block-commit', { device: 'disk', 'job-id': 'job0' }), {});
    const ready = await waitEvent(events, 'BLOCK_JOB_READY');
    assert.deepEqual(Object.keys(ready.data ?? {}).sort(), ['device', 'len', 'offset', 'speed', 'type']);
    const jobs = (await client.execute('query-block-jobs')) as Array<Record<string, unknown>>;
    assert.equal(jobs.length, 1);
    assert.deepEqual(Object.keys(jobs[0] ?? {}).sort(), ['auto-dismiss', 'auto-finalize', 'busy', 'device', 'io-status', 'len', 'offset', 'paused', 'ready', 'speed', 'status', 'type']);
    assert.equal(jobs[0]?.['ready'], true);
    assert.equal(jobs[0]?.['type'], 'commit');
    await assert.rejects(client.execute('block-stream', { device: 'disk' }), /is busy: block device is in use by block job: commit/);
    await client.execute('block-job-complete', { device: 'job0' });
    await waitEvent(events, 'BLOCK_JOB_COMPLETED');
    assert.equal(graph.replaced.length, 1);
    assert.deepEqual(await readAll(graph.node('disk')), model);
    assert.deepEqual(await client.execute('query-jobs'), []);
    const statuses = events.filter((e) => e.event === 'JOB_STATUS_CHANGE').map((e) => e.data?.['status']);
    assert.deepEqual(statuses, ['created', 'running', 'ready', 'waiting', 'pending', 'concluded', 'null']);
  });
});

test('job commands report QEMU errors for a missing job, a wrong verb and an image with no backing', async () => {
  await withQmp(async ({ client, graph }) => {
    const chain = await makeChain(MiB, 1, () => undefined);
    graph.add('solo', chain.top);
    await assert.rejects(client.execute('block-commit', { device: 'solo' }), /has no backing file/);
    await assert.rejects(client.execute('block-job-cancel', { device: 'nope' }), /Block job 'nope' not found/);
    await assert.rejects(client.execute('job-pause', { id: 'nope' }), /Job not found/);
    const two = await makeChain(MiB, 2, (i, d) => d.set(0, 4096, 'data', i + 1));
    graph.add('disk', two.top);
    await client.execute('block-commit', { device: 'disk', 'auto-dismiss': false, speed: 1 });
    await assert.rejects(client.execute('job-finalize', { id: 'disk' }), /Job 'disk' in state '(running|ready)' cannot accept command verb 'finalize'/);
    await client.execute('job-cancel', { id: 'disk' });
    for (let i = 0; i < 200; i++) {
      const j = (await client.execute('query-jobs')) as Array<Record<string, unknown>>;
      if (j[0]?.['status'] === 'concluded') break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await client.execute('job-dismiss', { id: 'disk' });
    assert.deepEqual(await client.execute('query-jobs'), []);
  });
});

test('removing the export cancels a running commit on its node', async () => {
  await withQmp(async ({ client, graph, events }) => {
    const chain = await makeChain(8 * MiB, 2, (i, d) => d.set(0, 8 * MiB, 'data', i + 1));
    graph.add('disk', chain.top);
    await client.execute('block-commit', { device: 'disk', speed: MiB });
    await waitEvent(events, 'JOB_STATUS_CHANGE');
    graph.release(chain.top);
    await waitEvent(events, 'BLOCK_JOB_CANCELLED');
  });
});

test('blockdev-mirror to a node, then job-complete switches the device to the target', async () => {
  await withQmp(async ({ client, graph, events }) => {
    const src = await makeChain(2 * MiB, 1, (_i, d) => d.set(0, MiB, 'data', 0x42));
    const dst = await makeChain(2 * MiB, 1, () => undefined);
    graph.add('src', src.top);
    graph.add('dst', dst.top);
    await client.execute('blockdev-mirror', { device: 'src', target: 'dst', sync: 'full', 'job-id': 'm' });
    await waitEvent(events, 'BLOCK_JOB_READY');
    const info = (await client.execute('query-block-jobs')) as Array<Record<string, unknown>>;
    assert.equal(info[0]?.['actively-synced'], false);
    await client.execute('job-complete', { id: 'm' });
    await waitEvent(events, 'BLOCK_JOB_COMPLETED');
    assert.equal(graph.node('src'), dst.top);
    assert.deepEqual(await readAll(dst.top), await readAll(src.top));
    await assert.rejects(client.execute('blockdev-mirror', { device: 'src', target: 'dst', sync: 'bogus' }), /'sync' does not accept value 'bogus'/);
  });
});
