/** Helpers shared by the crash, model and in-flight tests: images in memory, checks, qemu-img check. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { HostFile, HostOpenOptions } from '../../src/host/host-file.js';
import { checkQcow2 } from '../../src/formats/qcow2/check.js';
import { createQcow2 } from '../../src/formats/qcow2/create.js';
import { parseHeaderCluster, readHeaderCluster } from '../../src/formats/qcow2/header.js';
import { Qcow2Driver } from '../../src/formats/qcow2/qcow2-driver.js';
import { MemoryHostFile } from './memory-host.js';

export function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-'));
}

/** The bytes of a fresh qcow2 image made by our create (as qemu-img create makes it). */
export async function freshImageBytes(size: number, options: Record<string, string>): Promise<Uint8Array> {
  const dir = tmpDir();
  try {
    const file = path.join(dir, 'base.qcow2');
    await createQcow2(file, { size, options });
    return new Uint8Array(fs.readFileSync(file));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Opens the driver over `host` (every open of the image's path returns it). */
export function openOnHost(host: HostFile, options: { readOnly: boolean; l2CacheSize?: number; refcountCacheSize?: number }): Promise<Qcow2Driver> {
  return Qcow2Driver.open(host.path, {
    readOnly: options.readOnly,
    noRepair: true,
    qcow2Tuning: {
      ...(options.l2CacheSize !== undefined ? { l2CacheSize: options.l2CacheSize } : {}),
      ...(options.refcountCacheSize !== undefined ? { refcountCacheSize: options.refcountCacheSize } : {}),
    },
    openHost: async (_p: string, _o: HostOpenOptions) => host,
  });
}

/** vdisk's own check of image bytes (no repair). */
export async function checkBytes(bytes: Uint8Array): Promise<{ corruptions: number; leaks: number; checkErrors: number }> {
  const host = new MemoryHostFile('cut.qcow2', bytes, { readOnly: true, share: true });
  const parsed = parseHeaderCluster(await readHeaderCluster(host), { file: host.path, fileSize: await host.size() });
  const r = await checkQcow2({ host, file: host.path, parsed, repair: 'none' });
  return { corruptions: r.corruptions, leaks: r.leaks, checkErrors: r.checkErrors };
}

/** `qemu-img check` of a file: the counts it reports. */
export function qemuCheck(file: string): { corruptions: number; leaks: number; checkErrors: number; status: number } {
  const r = spawnSync('qemu-img', ['check', '-f', 'qcow2', '--output=json', file], { encoding: 'utf8' });
  const json = JSON.parse(r.stdout || '{}') as { corruptions?: number; leaks?: number; 'check-errors'?: number };
  return { corruptions: json.corruptions ?? 0, leaks: json.leaks ?? 0, checkErrors: json['check-errors'] ?? 0, status: r.status ?? -1 };
}

/** A deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
