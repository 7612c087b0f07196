import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const MAIN = path.join(path.dirname(fileURLToPath(import.meta.url)), 'serve-main.js');

export interface Served {
  readonly proc: ChildProcess;
  readonly uri: string;
  readonly stderr: () => string;
  /** Resolves with the exit code. */
  readonly exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(socketPath);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Starts a server process (`vdisk serve` by default, or any command such as
 * qemu-nbd) listening on `socketPath`, and waits until the socket exists. The
 * readiness probe uses only the existence of the file: connecting would count as
 * a client for a non-persistent server.
 */
export async function startServer(command: string[], socketPath: string, options: { probe?: boolean } = {}): Promise<Served> {
  const [cmd, ...args] = command[0] === 'vdisk' ? [process.execPath, MAIN, ...command.slice(1)] : command;
  const proc = spawn(cmd ?? 'false', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  proc.stdout?.resume();
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + 10000;
  for (;;) {
    if (fs.existsSync(socketPath) && (!options.probe || (await canConnect(socketPath)))) break;
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`server did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    proc,
    uri: `nbd+unix:///?socket=${socketPath}`,
    stderr: () => err,
    exited,
    stop: async (signal: NodeJS.Signals = 'SIGTERM') => {
      if (proc.exitCode === null) proc.kill(signal);
      return exited;
    },
  };
}

/** Runs a tool synchronously; throws with its stderr when it fails. */
export function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

export function runStatus(cmd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
