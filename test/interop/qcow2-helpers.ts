/** Shared helpers of the qcow2 driver interop tests (qemu-img/qemu-io as oracles). */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { BackingSource } from '../../src/formats/driver.js';
import { Qcow2Driver } from '../../src/formats/qcow2/qcow2-driver.js';

export function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'vdisk-'));
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function qemuImg(...args: string[]): string {
  return sh('qemu-img', args);
}

export function qemuIo(file: string, ...cmds: string[]): void {
  const args = ['-f', 'qcow2'];
  for (const c of cmds) args.push('-c', c);
  args.push(file);
  sh('qemu-io', args);
}

/** The image's content as qemu-img convert -O raw produces it. */
export function qemuRaw(file: string): Buffer {
  const out = `${file}.oracle.raw`;
  qemuImg('convert', '-O', 'raw', file, out);
  const data = fs.readFileSync(out);
  fs.rmSync(out);
  return data;
}

/** A backing source over another image opened with our driver (resolving its own chain). */
export async function openChain(file: string, readOnly = true): Promise<{ top: Qcow2Driver; close(): Promise<void> }> {
  const drivers: Qcow2Driver[] = [];
  let current = await Qcow2Driver.open(file, { readOnly });
  drivers.push(current);
  let dir = path.dirname(file);
  while (current.backingRef) {
    const bfile = path.resolve(dir, current.backingRef.filename);
    const fmt = current.backingRef.format ?? 'qcow2';
    let src: BackingSource;
    if (fmt === 'raw') {
      const size = fs.statSync(bfile).size;
      src = {
        length: size,
        read: async (off, buf) => {
          const fd = fs.openSync(bfile, 'r');
          try {
            buf.fill(0);
            fs.readSync(fd, buf, 0, buf.length, off);
          } finally {
            fs.closeSync(fd);
          }
        },
      };
      current.setBacking(src);
      break;
    }
    const below = await Qcow2Driver.open(bfile, { readOnly: true });
    drivers.push(below);
    current.setBacking({ length: below.length, read: (off, buf) => below.read(off, buf) });
    current = below;
    dir = path.dirname(bfile);
  }
  const top = drivers[0];
  if (!top) throw new Error('no driver');
  return {
    top,
    async close() {
      for (const d of drivers) await d.close();
    },
  };
}

/** Reads the whole disk through our driver in uneven chunks. */
export async function readAll(d: Qcow2Driver, chunk = 300_000): Promise<Buffer> {
  const out = Buffer.alloc(d.length);
  for (let pos = 0; pos < d.length; pos += chunk) {
    const n = Math.min(chunk, d.length - pos);
    await d.read(pos, out.subarray(pos, pos + n));
  }
  return out;
}

export interface CheckJson {
  readonly corruptions?: number;
  readonly leaks?: number;
  readonly 'check-errors'?: number;
  readonly 'image-end-offset'?: number;
}

/** qemu-img check --output=json, tolerating its non-zero exit codes. */
export function qemuCheck(file: string): CheckJson {
  try {
    return JSON.parse(qemuImg('check', '--output=json', file)) as CheckJson;
  } catch (e) {
    const out = (e as { stdout?: string }).stdout ?? '';
    return JSON.parse(out) as CheckJson;
  }
}

export function qemuCompare(a: string, b: string): boolean {
  try {
    qemuImg('compare', '-f', 'qcow2', '-F', 'qcow2', a, b);
    return true;
  } catch {
    return false;
  }
}
