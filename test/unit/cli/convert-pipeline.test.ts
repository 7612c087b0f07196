import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ImageNode } from '../../../src/block/types.js';
import { copyAll, type CopySettings } from '../../../src/cli/convert-copy.js';
import { ProgressPrinter } from '../../../src/cli/format/progress.js';

const MiB = 1024 * 1024;

/** A source whose every 2 MiB chunk is data and whose reads finish in reverse order of issue. */
function slowSource(length: number, log: string[]): ImageNode {
  let issued = 0;
  const source = {
    filename: 'src',
    length,
    clusterSize: 65536,
    async blockStatus(offset: number, len: number) {
      return [{ offset, length: len, present: true, zero: false, data: true, depth: 0 }];
    },
    async read(offset: number, buf: Uint8Array) {
      const delay = 20 - (issued++ % 8) * 2;
      log.push(`read ${offset / MiB}`);
      await new Promise((r) => setTimeout(r, delay));
      buf.fill(1 + ((offset / (2 * MiB)) % 200));
    },
  };
  return source as unknown as ImageNode;
}

function recordingTarget(log: string[], inFlight: { now: number; max: number }): ImageNode {
  const target = {
    filename: 'dst',
    clusterSize: 65536,
    async write(offset: number) {
      inFlight.now++;
      inFlight.max = Math.max(inFlight.max, inFlight.now);
      await new Promise((r) => setTimeout(r, 1));
      inFlight.now--;
      log.push(`write ${offset / MiB}`);
    },
    async writeZeroes() {},
  };
  return target as unknown as ImageNode;
}

const SETTINGS: CopySettings = { sparseSize: 4096, compress: false, hasBacking: false, targetZeroed: true, parallel: 8, outOfOrder: false, copyOffload: false };

test('without -W the target is written in disk order even when reads complete out of order', async () => {
  const log: string[] = [];
  const inFlight = { now: 0, max: 0 };
  await copyAll({ sources: [slowSource(32 * MiB, log)], target: recordingTarget(log, inFlight), settings: SETTINGS, progress: new ProgressPrinter(undefined) });
  const writes = log.filter((l) => l.startsWith('write')).map((l) => Number(l.split(' ')[1]));
  assert.deepEqual(writes, Array.from({ length: 16 }, (_, i) => i * 2));
  assert.equal(inFlight.max, 1);
  // Reads overlapped: several were issued before the first write.
  assert.ok(log.indexOf('write 0') >= 4, log.join(','));
});

test('-m 1 copies one chunk at a time; -W lets writes overlap and still writes every chunk once', async () => {
  const serial: string[] = [];
  await copyAll({ sources: [slowSource(8 * MiB, serial)], target: recordingTarget(serial, { now: 0, max: 0 }), settings: { ...SETTINGS, parallel: 1 }, progress: new ProgressPrinter(undefined) });
  assert.deepEqual(serial, ['read 0', 'write 0', 'read 2', 'write 2', 'read 4', 'write 4', 'read 6', 'write 6']);
  const log: string[] = [];
  const inFlight = { now: 0, max: 0 };
  await copyAll({ sources: [slowSource(32 * MiB, log)], target: recordingTarget(log, inFlight), settings: { ...SETTINGS, outOfOrder: true }, progress: new ProgressPrinter(undefined) });
  const writes = log.filter((l) => l.startsWith('write')).map((l) => Number(l.split(' ')[1]));
  assert.deepEqual([...writes].sort((a, b) => a - b), Array.from({ length: 16 }, (_, i) => i * 2));
  assert.notDeepEqual(writes, [...writes].sort((a, b) => a - b));
});

test('a failed read stops the copy with the error and leaves no worker waiting', async () => {
  const log: string[] = [];
  const source = slowSource(16 * MiB, log);
  const failing = Object.assign(Object.create(source) as ImageNode, {
    async read(offset: number) {
      if (offset === 4 * MiB) throw Object.assign(new Error('boom'), { code: 'EIO', syscall: 'read' });
      await new Promise((r) => setTimeout(r, 5));
    },
  });
  await assert.rejects(
    copyAll({ sources: [failing], target: recordingTarget(log, { now: 0, max: 0 }), settings: SETTINGS, progress: new ProgressPrinter(undefined) }),
    /error while reading at byte 4194304: Input\/output error/,
  );
});
