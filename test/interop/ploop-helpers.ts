// Builds ploop delta stacks with DiskDescriptor.xml for the ploop interop tests, with QEMU as the oracle.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { createPloop } from '../../src/formats/ploop/index.js';

export const TOP_GUID = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
export const ROOT = '{00000000-0000-0000-0000-000000000000}';

export function ok(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

export { withDir } from '../support/temp-dir.js';

/** QEMU's view of a stack (bottom first) as a json: filename of parallels nodes with runtime backings. */
export function stackJson(files: readonly string[]): string {
  let node: Record<string, unknown> | null = null;
  for (const f of files) {
    node = { driver: 'parallels', file: { driver: 'file', filename: f }, ...(node ? { backing: node } : {}) };
  }
  return `json:${JSON.stringify(node)}`;
}

/** QEMU's reading of the whole stack. */
export function qemuRead(dir: string, files: readonly string[]): Buffer {
  const out = join(dir, `oracle-${Math.random().toString(16).slice(2)}.raw`);
  ok('qemu-img', ['convert', '-O', 'raw', stackJson(files), out]);
  const b = fs.readFileSync(out);
  fs.rmSync(out);
  return b;
}

export function descriptorXml(files: readonly string[], sizeSectors: number, blockSectors: number): string {
  const guids = files.map((_, i) => (i === files.length - 1 ? TOP_GUID : `{${String(i + 1).repeat(8)}-1111-1111-1111-111111111111}`));
  const images = files.map((f, i) => `<Image><GUID>${guids[i]}</GUID><Type>Compressed</Type><File>${f}</File></Image>`).join('');
  const shots = files.map((_, i) => `<Shot><GUID>${guids[i]}</GUID><ParentGUID>${i === 0 ? ROOT : guids[i - 1]}</ParentGUID></Shot>`).join('');
  return `<?xml version="1.0"?>
<Parallels_disk_image Version="1.0">
  <Disk_Parameters><Disk_size>${sizeSectors}</Disk_size></Disk_Parameters>
  <StorageData><Storage><Start>0</Start><End>${sizeSectors}</End><Blocksize>${blockSectors}</Blocksize>${images}</Storage></StorageData>
  <Snapshots><TopGUID>${TOP_GUID}</TopGUID>${shots}</Snapshots>
</Parallels_disk_image>`;
}

/**
 * Creates `writes.length` deltas (d0 bottom) of `size` bytes with 64 KiB clusters in `dir`,
 * each written by qemu-io with its own commands, and a DiskDescriptor.xml naming them.
 */
export async function buildStack(dir: string, size: number, writes: readonly string[][]): Promise<{ xml: string; files: string[] }> {
  const files: string[] = [];
  for (let i = 0; i < writes.length; i++) {
    const f = join(dir, `d${i}.hds`);
    await createPloop(f, { size, options: { cluster_size: '64k' } });
    for (const cmd of writes[i] ?? []) ok('qemu-io', ['-f', 'parallels', '-c', cmd, f]);
    files.push(f);
  }
  const xml = join(dir, 'DiskDescriptor.xml');
  fs.writeFileSync(xml, descriptorXml(files.map((f) => f.slice(dir.length + 1)), size / 512, 128));
  return { xml, files };
}
