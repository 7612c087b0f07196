// Create a raw disk, write to it, and print what is allocated.
// Run after `npm run build`: node examples/basic.mjs [path]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createImage, openImage } from '../dist/src/index.js';

const dir = mkdtempSync(join(tmpdir(), 'vdisk-example-'));
const path = process.argv[2] ?? join(dir, 'disk.raw');
try {
  await createImage(path, 'raw', { size: 1024 * 1024, options: {} });
  const disk = await openImage(path, { format: 'raw' });
  await disk.write(65536, new TextEncoder().encode('hello, disk'));
  const back = new Uint8Array(11);
  await disk.read(65536, back);
  console.log(new TextDecoder().decode(back));
  for (const e of await disk.blockStatus(0, disk.length)) {
    console.log(`${e.offset}+${e.length} ${e.data ? 'data' : 'zero'}`);
  }
  await disk.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
