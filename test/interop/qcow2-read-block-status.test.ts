import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openChain, qemuImg, qemuIo, tmpDir } from './qcow2-helpers.js';

interface MapEntry {
  start: number;
  length: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** Per-granule view: "present/zero/data/offset" strings, comparable across tools. */
function perGranule(entries: Array<{ start: number; length: number; present: boolean; zero: boolean; data: boolean; offset?: number }>, g: number): string[] {
  const out: string[] = [];
  for (const e of entries) {
    for (let p = e.start; p < e.start + e.length; p += g) {
      const off = e.offset === undefined ? '-' : String(e.offset + (p - e.start));
      // An unallocated range without backing: qemu-img reports zero=true; that is the block layer's call.
      // Data clusters over host holes are zero=true in qemu-img map: the file layer's answer, not ours.
      out.push(`${p}:${e.present}/${e.present && !e.data ? e.zero : '?'}/${e.data}/${off}`);
    }
  }
  return out;
}

for (const opts of ['compat=1.1', 'extended_l2=on', 'cluster_size=4k']) {
  test(`blockStatus matches qemu-img map for every cluster kind: ${opts}`, async () => {
    const dir = tmpDir();
    try {
      const f = path.join(dir, 'm.qcow2');
      qemuImg('create', '-f', 'qcow2', '-o', opts, f, '1M');
      qemuIo(f, 'write -P 1 0 64k', 'write -z 64k 64k', 'write -P 2 128k 64k', 'write -z 128k 64k', 'write -c -P 3 256k 64k', 'write -z -u 320k 64k', 'write -P 4 450k 8k', 'write -z 520k 4k');
      const map = JSON.parse(qemuImg('map', '--output=json', f)) as MapEntry[];
      const chain = await openChain(f);
      try {
        const ours = await chain.top.blockStatus(0, chain.top.length);
        let pos = 0;
        const mine = ours.map((e) => {
          const r = { start: pos, length: e.length, present: e.allocated, zero: e.zero, data: e.data, ...(e.hostOffset === undefined ? {} : { offset: e.hostOffset }) };
          pos += e.length;
          return r;
        });
        assert.deepEqual(perGranule(mine, 2048), perGranule(map, 2048));
        // Whole-table extents: a sub-range query is answered exactly.
        const part = await chain.top.blockStatus(1000, 300_000);
        assert.equal(part.reduce((s, e) => s + e.length, 0), 300_000);
      } finally {
        await chain.close();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}
