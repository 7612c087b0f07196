/**
 * A guest read over several clusters: clusters that follow each other on the
 * host are read with one host read (an NBD READ of 256 KiB over 64 KiB clusters
 * is one pread, not four); clusters that do not are read separately, and the
 * bytes are the same either way, with zero clusters, unallocated clusters and
 * backing data in the range. qemu-img convert is the oracle of the bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { openImage } from '../../../../src/block/open.js';
import { Qcow2Driver } from '../../../../src/formats/qcow2/qcow2-driver.js';
import type { HostFile, HostOpenOptions } from '../../../../src/host/host-file.js';
import { NodeHostFile } from '../../../../src/host/node-file.js';
import { qemuImg, qemuIo, qemuRaw, sh } from '../../../interop/qcow2-helpers.js';
import { withDir } from '../../../support/temp-dir.js';

const KiB = 1024;
const CLUSTER = 64 * KiB;

/** Host reads of `length` bytes or more seen by the driver's host files (small reads are metadata). */
interface ReadLog {
  big: Array<{ offset: number; length: number }>;
}

/** Opens `file` with every host read of at least one cluster logged. */
async function openLogged(file: string): Promise<{ driver: Qcow2Driver; log: ReadLog }> {
  const log: ReadLog = { big: [] };
  const openHost = async (p: string, o: HostOpenOptions): Promise<HostFile> => {
    const inner = await NodeHostFile.open(p, o);
    return new Proxy(inner, {
      get(target, prop) {
        if (prop === 'read') {
          return async (buf: Uint8Array, offset: number): Promise<void> => {
            if (buf.length >= CLUSTER) log.big.push({ offset, length: buf.length });
            await target.read(buf, offset);
          };
        }
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
  };
  const driver = await Qcow2Driver.open(file, { readOnly: true, openHost });
  return { driver, log };
}

/** Reads [offset, offset+length) once to load the L2 table, then again with the log cleared. */
async function readTwice(d: Qcow2Driver, log: ReadLog, offset: number, length: number): Promise<Uint8Array> {
  await d.read(offset, new Uint8Array(length));
  log.big.length = 0;
  const buf = new Uint8Array(length);
  await d.read(offset, buf);
  return buf;
}

/** A 1 MiB qcow2 (64 KiB clusters) over a raw base, the base written by `baseWrite` if given: the top's path. */
function topOverRawBase(dir: string, baseWrite?: string): string {
  const base = path.join(dir, 'base.raw');
  const top = path.join(dir, 'top.qcow2');
  qemuImg('create', '-q', '-f', 'raw', base, '1M');
  if (baseWrite) sh('qemu-io', ['-f', 'raw', '-c', baseWrite, base]);
  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', '-b', base, '-F', 'raw', top, '1M');
  return top;
}

const LAYOUTS = [
  { name: 'four host-contiguous 64 KiB clusters is one host read', writes: ['write -P 0x11 0 256k'], hostReads: 1 },
  // Guest clusters 3, 2, 1, 0 land at increasing host offsets: no two neighbours are host-contiguous.
  {
    name: 'four clusters allocated in reverse order is four host reads',
    writes: ['write -P 0x44 192k 64k', 'write -P 0x33 128k 64k', 'write -P 0x22 64k 64k', 'write -P 0x11 0 64k'],
    hostReads: 4,
  },
];

for (const layout of LAYOUTS) {
  test(
    `a 256 KiB read over ${layout.name}, with the bytes of cluster-sized reads and of qemu-img`,
    withDir(async (dir) => {
      const file = path.join(dir, 'a.qcow2');
      qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=65536', file, '1M');
      qemuIo(file, ...layout.writes);
      const { driver, log } = await openLogged(file);
      try {
        const whole = await readTwice(driver, log, 0, 256 * KiB);
        assert.equal(log.big.length, layout.hostReads, JSON.stringify(log.big));
        const pieces = new Uint8Array(256 * KiB);
        for (let c = 0; c < 4; c++) await driver.read(c * CLUSTER, pieces.subarray(c * CLUSTER, (c + 1) * CLUSTER));
        assert.ok(Buffer.from(whole).equals(Buffer.from(pieces)));
        assert.ok(Buffer.from(whole).equals(qemuRaw(file).subarray(0, 256 * KiB)));
      } finally {
        await driver.close();
      }
    }),
  );
}

test(
  'a read across data, a zero cluster, an unallocated cluster over a backing file and a partial run returns what qemu-img reads',
  withDir(async (dir) => {
    const top = topOverRawBase(dir, 'write -P 0x5a 0 1M');
    // Clusters 0-1 data (contiguous), 2 zero, 3 from the backing, 4-5 data, 6 from the backing,
    // 7 data written before 4-5 (so 5 and 7 are not host neighbours), and a 4 KiB write mid-cluster 8.
    qemuIo(top, 'write -P 0x71 448k 64k', 'write -P 0x11 0 128k', 'write -z 128k 64k', 'write -P 0x44 256k 128k', 'write -P 0x99 516k 4k');
    const expected = qemuRaw(top);
    const node = await openImage(top, { readOnly: true });
    try {
      for (const [offset, length] of [
        [0, 1024 * KiB],
        [0, 256 * KiB],
        [60 * KiB, 256 * KiB],
        [300 * KiB, 250 * KiB],
      ] as const) {
        const buf = new Uint8Array(length);
        await node.read(offset, buf);
        assert.ok(Buffer.from(buf).equals(expected.subarray(offset, offset + length)), `bytes at ${offset}+${length}`);
      }
    } finally {
      await node.close();
    }
  }),
);

test(
  'hostRangeNow names the host bytes of plain data in one host run of a cached table, and nothing for zero, backing, split or uncached ranges',
  withDir(async (dir) => {
    const top = topOverRawBase(dir);
    // Clusters 0-1 data (host neighbours), 2 zero, 3 unallocated (backing), 7 written before 4-5 (5 and 7 apart on the host).
    qemuIo(top, 'write -P 0x71 448k 64k', 'write -P 0x11 0 128k', 'write -z 128k 64k', 'write -P 0x44 256k 128k');
    const expected = qemuRaw(top);
    const { driver } = await openLogged(top);
    try {
      assert.equal(driver.hostRangeNow(0, 4096), null, 'the L2 table is not cached yet: no I/O to find out');
      await driver.read(0, new Uint8Array(4096));
      /** The bytes at the host range hostRangeNow names, or null when it names none. */
      const at = async (offset: number, length: number): Promise<Buffer | null> => {
        const r = driver.hostRangeNow(offset, length);
        if (r === null) return null;
        assert.equal(r.length, length);
        const buf = Buffer.alloc(length);
        await r.file.read(buf, r.offset);
        return buf;
      };
      for (const [offset, length] of [
        [0, 128 * KiB],
        [4 * KiB, 100 * KiB],
        [256 * KiB + 512, 128 * KiB - 512],
      ] as const) {
        const bytes = await at(offset, length);
        assert.ok(bytes && bytes.equals(expected.subarray(offset, offset + length)), `host bytes of ${offset}+${length}`);
      }
      for (const [offset, length, why] of [
        [64 * KiB, 128 * KiB, 'data then a zero cluster'],
        [128 * KiB, 4 * KiB, 'a zero cluster'],
        [192 * KiB, 4 * KiB, 'an unallocated cluster (backing)'],
        [320 * KiB, 192 * KiB, 'clusters apart on the host'],
        [1024 * KiB - 512, 1024, 'past the end'],
      ] as const) {
        assert.equal(driver.hostRangeNow(offset, length), null, why);
      }
    } finally {
      await driver.close();
    }
  }),
);
