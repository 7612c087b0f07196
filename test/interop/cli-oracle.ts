/**
 * Runs a command line through vdisk (in-process, output captured) and through
 * QEMU's tool (qemu-img / qemu-io), and normalises what legitimately differs:
 * the program name in messages and qemu-io's timing numbers.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { run } from '../../src/cli/program.js';

export interface ToolResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly status: number;
}

/** Runs vdisk with `argv` in `cwd`. */
export async function vdisk(cwd: string, argv: readonly string[]): Promise<ToolResult> {
  let stdout = '';
  let stderr = '';
  const saved = process.cwd();
  process.chdir(cwd);
  try {
    const status = await run(argv, { out: { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t) } });
    return { stdout, stderr, status };
  } finally {
    process.chdir(saved);
  }
}

/** Runs a QEMU tool in `cwd`. */
export function qemu(tool: 'qemu-img' | 'qemu-io', cwd: string, argv: readonly string[]): ToolResult {
  const r = spawnSync(tool, argv, { cwd, encoding: 'utf8', env: { ...process.env, TZ: process.env.TZ ?? 'UTC' } });
  return { stdout: r.stdout, stderr: r.stderr, status: r.status ?? -1 };
}

/** Rewrites what may differ between the tools: program names and timings. */
export function normalise(text: string): string {
  return text
    .replace(/\bqemu-img: /g, 'vdisk: ')
    .replace(/\bqemu-io: /g, 'vdisk: ')
    .replace(/Try 'qemu-img --help'/g, "Try 'vdisk --help'")
    .replace(/^(.*), (\d+) ops; [^(]*\(.*\/sec and .* ops\/sec\)$/gm, '$1, $2 ops; TIME');
}

export function normalised(r: ToolResult): ToolResult {
  return { stdout: normalise(r.stdout), stderr: normalise(r.stderr), status: r.status };
}

/** A fresh directory under the system temp dir; remove it with `cleanup`. */
export function tempDir(): { readonly dir: string; cleanup(): void } {
  const dir = mkdtempSync(`${tmpdir()}/vdisk-`);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** True when the qcow2 driver is registered in this build (it lands separately from the CLI). */
export async function qcow2Available(): Promise<boolean> {
  const { formatNames } = await import('../../src/formats/registry.js');
  return (formatNames() as string[]).includes('qcow2');
}
