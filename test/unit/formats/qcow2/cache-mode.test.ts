/** Cache modes of the qcow2 engine, observed on the host file: unsafe never syncs, writethrough syncs every write, FUA syncs. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { CacheMode } from '../../../../src/formats/driver.js';
import { Qcow2Driver } from '../../../../src/formats/qcow2/qcow2-driver.js';
import { FaultHostFile } from '../../../../src/host/fault-file.js';
import type { HostOpenOptions } from '../../../../src/host/host-file.js';
import { freshImageBytes } from '../../../crash/image-helpers.js';
import { MemoryHostFile } from '../../../crash/memory-host.js';

async function syncsFor(cache: CacheMode, run: (d: Qcow2Driver) => Promise<void>): Promise<{ syncs: number; opened: HostOpenOptions[] }> {
  const fault = new FaultHostFile(new MemoryHostFile('c.qcow2', await freshImageBytes(1024 * 1024, {})));
  const opened: HostOpenOptions[] = [];
  const d = await Qcow2Driver.open('c.qcow2', {
    readOnly: false,
    cache,
    openHost: async (_p: string, o: HostOpenOptions) => {
      opened.push(o);
      return fault;
    },
  });
  try {
    await run(d);
  } finally {
    await d.close();
  }
  return { syncs: fault.log.filter((e) => e.kind === 'sync').length, opened };
}

const data = new Uint8Array(4096).fill(3);

test('cache=unsafe: neither flush nor close syncs the host', async () => {
  const r = await syncsFor('unsafe', async (d) => {
    await d.write(0, data);
    await d.flush();
  });
  assert.equal(r.syncs, 0);
});


test('cache=writethrough syncs after every write; FUA syncs under writeback', async () => {
  const wt = await syncsFor('writethrough', async (d) => {
    for (let i = 0; i < 4; i++) await d.write(i * 4096, data);
  });
  const wb = await syncsFor('writeback', async (d) => {
    for (let i = 0; i < 4; i++) await d.write(i * 4096, data);
  });
  assert.ok(wt.syncs >= wb.syncs + 4, `writethrough ${wt.syncs} syncs, writeback ${wb.syncs}`);
  const fua = await syncsFor('writeback', async (d) => {
    for (let i = 0; i < 4; i++) await d.write(i * 4096, data, { fua: true });
  });
  assert.ok(fua.syncs >= wb.syncs + 4);
});

test('cache=none and directsync open the host files with O_DIRECT', async () => {
  for (const cache of ['none', 'directsync'] as const) {
    const r = await syncsFor(cache, async () => undefined);
    assert.ok(r.opened.some((o) => o.direct === true && !o.readOnly), cache);
  }
  const wb = await syncsFor('writeback', async () => undefined);
  assert.ok(!wb.opened.some((o) => o.direct === true));
});
