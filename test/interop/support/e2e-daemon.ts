// End-to-end fixtures: a real `vdisk serve --qmp` child process driven over QMP, guest I/O through qemu-io
// over the NBD export, and a byte model of everything the guest wrote. Every process started here is
// stopped in finally blocks with a bounded wait and a SIGKILL fallback, so a failing test never hangs the run.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import assert from 'node:assert/strict';
import { TestQmpClient } from '../../unit/qmp/qmp-client.js';
import { run, startServer, type Served } from './serve-process.js';

export const MiB = 1024 * 1024;

/** How long any single wait of these fixtures may take before the test fails instead of hanging (ms). */
const WAIT_MS = 20000;

export function tmpDir(): string {
  return fs.mkdtempSync(os.tmpdir() + '/vdisk-');
}

export function ok(reply: Record<string, unknown>): unknown {
  assert.ok('return' in reply, `expected success, got ${JSON.stringify(reply)}`);
  return reply['return'];
}

export function errorOf(reply: Record<string, unknown>): string {
  assert.ok('error' in reply, `expected an error, got ${JSON.stringify(reply)}`);
  return (reply['error'] as { desc: string }).desc;
}

/** Rejects after `ms` with `what` in the message, so a missing event fails the test. */
export function within<T>(p: Promise<T>, what: string | (() => string), ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Waits for a process to exit; SIGKILL after `ms`. Resolves with the exit code (null when killed). */
export async function stopProcess(proc: ChildProcess, exited: Promise<number | null>, ms = 5000): Promise<number | null> {
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<null>((resolve) => {
    timer = setTimeout(() => {
      proc.kill('SIGKILL');
      resolve(null);
    }, ms);
  });
  const code = await Promise.race([exited, killed]);
  clearTimeout(timer);
  await exited;
  return code;
}

export interface E2eDaemon {
  readonly served: Served;
  readonly qmp: TestQmpClient;
  readonly qmpPath: string;
  readonly nbdPath: string;
  /** nbd+unix URI of an export. */
  uri(name: string): string;
  /** Index in qmp.messages of the next message: pass to `event(..., from)` to wait only for later ones. */
  mark(): number;
  event(name: string, from?: number, pred?: (data: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
  /** QMP `quit`, then a bounded wait for the exit (SIGKILL fallback); the exit code. */
  quit(): Promise<number | null>;
}

/**
 * Runs `fn` against a fresh `vdisk serve --qmp` with an NBD server on a unix socket. The daemon is always
 * stopped afterwards: QMP quit if the test did not, SIGTERM, then SIGKILL, each with a bounded wait.
 */
export async function withDaemon(dir: string, fn: (d: E2eDaemon) => Promise<void>): Promise<void> {
  const qmpPath = `${dir}/qmp.sock`;
  const nbdPath = `${dir}/nbd.sock`;
  const served = await startServer(['vdisk', '--qmp', qmpPath], qmpPath, { probe: true });
  let qmp: TestQmpClient | null = null;
  try {
    qmp = await TestQmpClient.connect(qmpPath);
    const client = qmp;
    await within(client.next((m) => 'QMP' in m), 'the QMP greeting');
    ok(await client.execute('qmp_capabilities'));
    ok(await client.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbdPath } } }));
    const d: E2eDaemon = {
      served,
      qmp: client,
      qmpPath,
      nbdPath,
      uri: (name) => `nbd+unix:///${name}?socket=${nbdPath}`,
      mark: () => client.messages.length,
      event: async (name, from = 0, pred = () => true) =>
        within(
          client.next((m) => m['event'] === name && pred((m['data'] ?? {}) as Record<string, unknown>), from),
          `QMP event ${name}`,
        ),
      quit: async () => {
        client.sendRaw(JSON.stringify({ execute: 'quit' }));
        return stopProcess(served.proc, served.exited);
      },
    };
    await fn(d);
  } finally {
    qmp?.close();
    if (served.proc.exitCode === null && served.proc.signalCode === null) {
      served.proc.kill('SIGTERM');
      await stopProcess(served.proc, served.exited);
    }
  }
}

/** Adds file + qcow2/parallels nodes for `file` under `name` and exports it writable under the same name. */
export async function addExportedImage(d: E2eDaemon, opts: { name: string; file: string; driver?: string }): Promise<void> {
  ok(await d.qmp.execute('blockdev-add', { driver: 'file', filename: opts.file, 'node-name': `${opts.name}-file` }));
  ok(await d.qmp.execute('blockdev-add', { driver: opts.driver ?? 'qcow2', file: `${opts.name}-file`, 'node-name': opts.name }));
  ok(await d.qmp.execute('block-export-add', { type: 'nbd', id: `exp-${opts.name}`, 'node-name': opts.name, writable: true }));
}

/** Deterministic guest writes: qemu-io commands, and the same bytes applied to a model of the disk. */
export class GuestModel {
  readonly model: Buffer;
  #seed: number;
  constructor(model: Buffer, seed: number) {
    this.model = model;
    this.#seed = seed;
  }

  #next(n: number): number {
    this.#seed = (this.#seed * 1103515245 + 12345) % 2 ** 31;
    return this.#seed % n;
  }

  /** `count` writes of 4 KiB..256 KiB at 4 KiB-aligned random offsets below `limit` (default: the whole disk). */
  writes(count: number, limit = this.model.length): string[] {
    const cmds: string[] = [];
    for (let i = 0; i < count; i++) {
      const length = 4096 * (1 + this.#next(64));
      const offset = 4096 * this.#next((limit - length) / 4096);
      const pattern = 1 + this.#next(255);
      this.model.fill(pattern, offset, offset + length);
      cmds.push(`write -P ${pattern} ${offset} ${length}`);
    }
    return cmds;
  }
}

/** A qemu-io process kept connected to an export, fed commands on stdin (one NBD connection for its whole life). */
export class QemuIoSession {
  readonly #proc: ChildProcess;
  readonly #exited: Promise<number | null>;
  #out = '';
  #done = 0;
  #waiters: Array<() => void> = [];

  constructor(uri: string) {
    // Line-buffered: qemu-io's stdout is a pipe here, and its answers are how a batch is known to be done.
    this.#proc = spawn('stdbuf', ['-oL', 'qemu-io', '-f', 'raw', uri], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#exited = new Promise((resolve) => this.#proc.once('exit', (code) => resolve(code)));
    void this.#exited.then(() => this.#waiters.splice(0).forEach((f) => f()));
    const onData = (c: Buffer): void => {
      this.#out += c.toString();
      this.#done = (this.#out.match(/(?:wrote|read) \d+\/\d+ bytes at offset/g) ?? []).length;
      const w = this.#waiters;
      this.#waiters = [];
      for (const f of w) f();
    };
    this.#proc.stdout?.on('data', onData);
    this.#proc.stderr?.on('data', onData);
  }

  get output(): string {
    return this.#out;
  }

  /** Sends read/write commands and waits until qemu-io has answered every one of them. */
  async run(cmds: readonly string[]): Promise<void> {
    // One at a time: qemu-io reads its next line only when stdin becomes readable again.
    for (const c of cmds) await this.#one(c);
    assert.doesNotMatch(this.#out, /failed|error/i, this.#out.slice(-1000));
  }

  async #one(cmd: string): Promise<void> {
    const cmds = [cmd];
    const target = this.#done + 1;
    this.#proc.stdin?.write(cmd + '\n');
    await within(
      (async () => {
        while (this.#done < target) {
          if (this.#proc.exitCode !== null) throw new Error(`qemu-io exited: ${this.#out}`);
          await new Promise<void>((r) => this.#waiters.push(r));
        }
      })(),
      () => `qemu-io to finish ${cmds.join('; ')} (output: ${this.#out.slice(-500)})`,
    );
  }

  async close(): Promise<void> {
    this.#proc.stdin?.end('quit\n');
    await stopProcess(this.#proc, this.#exited);
  }
}

/** The content of an image as raw bytes (qemu-img convert). */
export function readImage(dir: string, file: string, format = 'qcow2'): Buffer {
  const out = `${dir}/read-${Math.random().toString(36).slice(2)}.raw`;
  run('qemu-img', ['convert', '-f', format, '-O', 'raw', file, out]);
  try {
    return fs.readFileSync(out);
  } finally {
    fs.rmSync(out, { force: true });
  }
}

/** qemu-img compare of an image with the model, and qemu-img check clean. */
export function assertImageEquals(dir: string, file: string, model: Buffer, format = 'qcow2'): void {
  const raw = `${dir}/model-${Math.random().toString(36).slice(2)}.raw`;
  fs.writeFileSync(raw, model);
  try {
    run('qemu-img', ['compare', '-f', format, '-F', 'raw', file, raw]);
  } finally {
    fs.rmSync(raw, { force: true });
  }
  if (format !== 'raw') run('qemu-img', ['check', '-f', format, file]);
}
