import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImage } from '../../src/block/index.js';
import { VdiskError } from '../../src/errors.js';
import { seededRandom } from '../support/seeded-random.js';


function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hang: ${what} did not finish in ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Opens, reads everything and maps a (possibly corrupt) image read-only; returns what failed, if anything. */
async function exercise(path: string): Promise<'ok' | 'refused'> {
  let node;
  try {
    node = await openImage(path, { format: 'qcow2', readOnly: true });
  } catch (e) {
    if (e instanceof VdiskError) return 'refused';
    throw e;
  }
  try {
    const buf = new Uint8Array(256 * 1024);
    for (let off = 0; off < node.length; off += buf.length) {
      await node.read(off, buf.subarray(0, Math.min(buf.length, node.length - off)));
    }
    await node.blockStatus(0, node.length);
    return 'ok';
  } catch (e) {
    if (e instanceof VdiskError) return 'refused';
    throw e;
  } finally {
    await node.close().catch(() => undefined);
  }
}

test('mutated real images (metadata clusters) open, read and map or are refused with a VdiskError: no crash, no hang', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vdisk-fuzz-'));
  try {
    // Small clusters so the header, L1, refcount and L2 tables all sit in the first few KiB.
    const seeds: string[] = [];
    const mk = (name: string, opts: string, io: string[]): void => {
      const p = join(dir, name);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', opts, p, '4M']);
      if (io.length) execFileSync('qemu-io', ['-f', 'qcow2', ...io.flatMap((c) => ['-c', c]), p], { stdio: 'ignore' });
      seeds.push(p);
    };
    mk('plain.qcow2', 'cluster_size=4096', ['write -P 0x11 0 64k', 'write -z 128k 64k', 'write -c -P 0x22 1M 4k', 'discard 8k 4k']);
    mk('extl2.qcow2', 'cluster_size=16384,extended_l2=on', ['write -P 0x33 0 6k', 'write -z 64k 2k']);
    mk('v2.qcow2', 'cluster_size=4096,compat=0.10', ['write -P 0x44 4k 12k']);
    mk('zstd.qcow2', 'cluster_size=4096,compression_type=zstd', ['write -c -P 0x55 0 4k', 'write -c -P 0x56 4k 4k']);
    execFileSync('qemu-img', ['snapshot', '-c', 'snap', seeds[0] ?? '']);

    const digest = (p: string): string => createHash('sha256').update(readFileSync(p)).digest('hex');
    const before = seeds.map(digest);
    const random = seededRandom(0xf022);
    const outcomes = { ok: 0, refused: 0 };
    const iterations = Number(process.env['VDISK_FUZZ_ITERATIONS'] ?? 300);
    for (let i = 0; i < iterations; i++) {
      const seed = seeds[i % seeds.length] ?? '';
      const original = readFileSync(seed);
      const bytes = Buffer.from(original);
      // Mutate 1..8 bytes in the first 32 KiB (metadata), biased to 64-bit table entries.
      const count = 1 + Math.floor(random() * 8);
      for (let k = 0; k < count; k++) {
        const at = Math.floor(random() * Math.min(bytes.length, 32 * 1024));
        const mode = random();
        if (mode < 0.5) bytes[at] = Math.floor(random() * 256);
        else if (mode < 0.8) bytes[at] = (bytes[at] ?? 0) ^ (1 << Math.floor(random() * 8));
        else bytes.fill(0xff, at, Math.min(bytes.length, at + 8));
      }
      const target = join(dir, `m${i}.qcow2`);
      writeFileSync(target, bytes);
      const outcome = await withTimeout(exercise(target), 10_000, `iteration ${i} on ${seed}`);
      outcomes[outcome]++;
      rmSync(target);
    }
    assert.ok(outcomes.ok + outcomes.refused === iterations);
    // Both kinds occur: some mutations hit unused bytes, some hit validated fields.
    assert.ok(outcomes.ok > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
    // Reading the mutants never wrote anywhere else: the seed images are byte-for-byte unchanged.
    assert.deepEqual(seeds.map(digest), before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
