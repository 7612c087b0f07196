/** Copy buffers on transparent huge pages (host/huge-pages.ts and the addon's adviseHugePages). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { hugePageBytes } from '../../../src/host/huge-pages.js';
import { nativeHost } from '../../../src/host/native.js';
import { pageAlignedBytes } from '../../../src/util/page-aligned.js';

const MiB = 1024 * 1024;

/** The kernel's transparent huge page mode ("always", "madvise" or "never"), or null where there is none. */
function thpMode(): string | null {
  try {
    return /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

/** Kilobytes of this process's anonymous memory on huge pages. */
function anonHugeKiB(): number {
  const m = /^AnonHugePages:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'));
  return m ? Number(m[1]) : 0;
}

test('adviseHugePages names the first 2 MiB boundary in a buffer, and -1 when none is whole inside', () => {
  const advise = nativeHost()?.adviseHugePages;
  assert.ok(advise, 'the addon is built with adviseHugePages');
  // A page-aligned buffer of 4 MiB holds at least one whole huge page, starting on a page.
  const at = advise(pageAlignedBytes(4 * MiB));
  assert.ok(at >= 0 && at < 2 * MiB && at % 4096 === 0, `offset ${at}`);
  assert.equal(advise(pageAlignedBytes(MiB)), -1);
  assert.equal(advise(new Uint8Array(0)), -1);
  assert.throws(() => advise('not bytes' as unknown as Uint8Array), /buffer must be a Uint8Array/);
});

test('hugePageBytes gives zeroed, writable bytes of the length asked, and small ones as before', () => {
  const big = hugePageBytes(8 * MiB + 4096);
  assert.equal(big.length, 8 * MiB + 4096);
  assert.ok(big.every((b) => b === 0));
  big.fill(0x5a);
  assert.equal(big[big.length - 1], 0x5a);
  const small = hugePageBytes(65536);
  assert.equal(small.length, 65536);
  assert.equal(small.byteOffset, 0);
});

test('a hugePageBytes buffer is backed by huge pages once touched, where the kernel grants them on request', (t) => {
  const mode = thpMode();
  if (mode !== 'madvise' && mode !== 'always') {
    t.skip(`transparent huge pages are ${mode ?? 'absent'} here`);
    return;
  }
  const before = anonHugeKiB();
  const buf = hugePageBytes(8 * MiB);
  buf.fill(1);
  // Four 2 MiB pages; fewer only when the kernel had no free huge page to give.
  const gained = anonHugeKiB() - before;
  assert.ok(gained >= 2048, `AnonHugePages grew by ${gained} KiB`);
  assert.equal(buf[0], 1);
});
