/**
 * Power cuts during a shrink of an image with an internal snapshot. The
 * shrink's host writes and syncs are recorded; at every point of that log
 * the image is rebuilt from what the syncs before it made durable, with the
 * writes after them dropped, all applied, or a seeded half of them applied.
 * Every such image must check without corruption (leaks are allowed), keep
 * its data below the new end, and the snapshot, applied afterwards, must give
 * back the whole disk as it was before the shrink.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FaultHostFile, type HostLogEntry } from '../../src/host/fault-file.js';
import { checkBytes, freshImageBytes, openOnHost, prng } from './image-helpers.js';
import { MemoryHostFile } from './memory-host.js';

const SIZE = 4 * 1024 * 1024;
const NEW_SIZE = 1024 * 1024 + 512;

/** Fills a few ranges on both sides of the new end (4 KiB clusters: an L2 table maps 2 MiB). */
async function imageWithSnapshot(): Promise<{ bytes: Uint8Array; disk: Uint8Array }> {
  const host = new MemoryHostFile('img.qcow2', await freshImageBytes(SIZE, { cluster_size: '4096' }));
  const d = await openOnHost(host, { readOnly: false });
  const disk = new Uint8Array(SIZE);
  try {
    for (const [offset, length, value] of [
      [0, 64 * 1024, 0x11],
      [1024 * 1024 - 4096, 12 * 1024, 0x22],
      [3 * 1024 * 1024, 200 * 1024, 0x33],
      [SIZE - 4096, 4096, 0x44],
    ] as const) {
      const data = new Uint8Array(length).fill(value);
      await d.write(offset, data);
      disk.set(data, offset);
    }
    await d.snapshots.create({ name: 's1' });
  } finally {
    await d.close();
  }
  return { bytes: host.bytes().slice(), disk };
}

function apply(img: { bytes: Uint8Array }, e: HostLogEntry): void {
  const end = e.kind === 'write' ? e.offset + e.data.length : e.kind === 'zero' ? e.offset + e.length : e.kind === 'truncate' ? e.length : 0;
  if (end > img.bytes.length) {
    const next = new Uint8Array(end);
    next.set(img.bytes);
    img.bytes = next;
  }
  if (e.kind === 'write') img.bytes.set(e.data, e.offset);
  else if (e.kind === 'zero') img.bytes.fill(0, e.offset, end);
  else if (e.kind === 'truncate') img.bytes = img.bytes.slice(0, e.length);
}

async function readDisk(bytes: Uint8Array, snapshot: string | null): Promise<Uint8Array> {
  const d = await openOnHost(new MemoryHostFile('cut.qcow2', bytes.slice()), { readOnly: snapshot === null });
  try {
    if (snapshot !== null) await d.snapshots.apply(snapshot);
    const out = new Uint8Array(d.length);
    await d.read(0, out);
    return out;
  } finally {
    await d.close();
  }
}

test('power cut during a shrink with a snapshot: no corruption, the kept data and the snapshot survive', async () => {
  const { bytes: base, disk } = await imageWithSnapshot();
  const fault = new FaultHostFile(new MemoryHostFile('img.qcow2', base.slice()));
  const d = await openOnHost(fault, { readOnly: false });
  try {
    await d.resize(NEW_SIZE, { shrink: true });
  } finally {
    await d.close();
  }
  const log = fault.log;
  assert.ok(log.some((e) => e.kind === 'sync'));
  const rand = prng(7);
  for (let cut = 0; cut <= log.length; cut++) {
    let covers = 0;
    for (let i = cut - 1; i >= 0 && covers === 0; i--) {
      const e = log[i];
      if (e?.kind === 'sync') covers = e.covers;
    }
    const pending = log.slice(covers, cut).filter((e) => e.kind !== 'sync');
    for (const variant of ['dropped', 'applied', 'half'] as const) {
      const img = { bytes: base.slice() };
      for (const e of log.slice(0, covers)) apply(img, e);
      for (const e of pending) if (variant === 'applied' || (variant === 'half' && rand() < 0.5)) apply(img, e);
      const where = `cut ${cut}/${log.length}, pending writes ${variant}`;
      const c = await checkBytes(img.bytes);
      assert.deepEqual([c.corruptions, c.checkErrors], [0, 0], `${where}: vdisk check`);
      const active = await readDisk(img.bytes, null);
      assert.ok(active.length === SIZE || active.length === NEW_SIZE, `${where}: size ${active.length}`);
      assert.deepEqual(active.subarray(0, NEW_SIZE), disk.subarray(0, NEW_SIZE), `${where}: data below the new end`);
      assert.deepEqual(await readDisk(img.bytes, 's1'), disk, `${where}: the snapshot's disk`);
    }
  }
});
