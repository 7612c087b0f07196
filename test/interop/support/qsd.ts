// qemu-storage-daemon as an oracle and a peer: started with a QMP monitor on a unix socket plus any
// --blockdev/--nbd-server/--export arguments, driven with the same QMP test client as `vdisk serve --qmp`,
// and always stopped (QMP quit, then SIGTERM, then SIGKILL, each bounded) so a failing test never hangs.
import { TestQmpClient } from '../../unit/qmp/qmp-client.js';
import { run, startServer } from './serve-process.js';
import * as fs from 'node:fs';
import { ok, stopProcess, tmpDir, withDaemon, within } from './e2e-daemon.js';

export interface QmpPeer {
  readonly qmp: TestQmpClient;
  mark(): number;
  event(name: string, from?: number, pred?: (data: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
}

/** A QmpPeer over a connected client (vdisk serve's or qemu-storage-daemon's). */
export function peerOf(qmp: TestQmpClient): QmpPeer {
  return {
    qmp,
    mark: () => qmp.messages.length,
    event: (name, from = 0, pred = () => true) =>
      within(
        qmp.next((m) => m['event'] === name && pred((m['data'] ?? {}) as Record<string, unknown>), from),
        `QMP event ${name}`,
      ),
  };
}

/** Connects to a unix socket that exists but may not listen yet (bind comes before listen), retrying for 10 s. */
async function connectWhenListening(path: string): Promise<TestQmpClient> {
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      return await TestQmpClient.connect(path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED' || Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Runs `fn` against a fresh qemu-storage-daemon given `args` besides its QMP monitor at `${dir}/qsd-qmp.sock`. */
export async function withQsd(dir: string, args: readonly string[], fn: (q: QmpPeer) => Promise<void>): Promise<void> {
  const qmpPath = `${dir}/qsd-qmp.sock`;
  // No probe connection: the monitor's chardev takes one client at a time, and
  // under load the greeting of a client that came right after a probe's was
  // seen not to come within 20 s. The first connection is the test's own.
  const served = await startServer(
    ['qemu-storage-daemon', '--chardev', `socket,path=${qmpPath},server=on,wait=off,id=qmp0`, '--monitor', 'chardev=qmp0,mode=control', ...args],
    qmpPath,
  );
  let qmp: TestQmpClient | null = null;
  try {
    qmp = await connectWhenListening(qmpPath);
    const client = qmp;
    await within(client.next((m) => 'QMP' in m), 'the qemu-storage-daemon QMP greeting');
    ok(await client.execute('qmp_capabilities'));
    await fn(peerOf(client));
    client.sendRaw(JSON.stringify({ execute: 'quit' }));
    await stopProcess(served.proc, served.exited);
  } finally {
    qmp?.close();
    if (served.proc.exitCode === null && served.proc.signalCode === null) {
      served.proc.kill('SIGTERM');
      await stopProcess(served.proc, served.exited);
    }
  }
}

/** One QMP step of a script run against both daemons: the command, its arguments and what it answered. */
export type Transcript = unknown[];

/** What a reply says: its return value, or its error class and text. */
export function outcome(reply: Record<string, unknown>): unknown {
  return 'error' in reply ? { error: reply['error'] } : { return: reply['return'] };
}

/**
 * Runs a command that removes an export (safe mode) until the clients that
 * just ended (nbdinfo, qemu-io) are gone from the server too: either daemon may
 * not have seen their disconnect yet ("export 'x' still in use"). The last
 * reply is returned.
 */
export async function removeExportWhenIdle(peer: QmpPeer, name: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 10000;
  for (;;) {
    const reply = await peer.qmp.execute(name, args);
    const busy = 'error' in reply && /still in use/.test(JSON.stringify(reply['error']));
    if (!busy || Date.now() > deadline) return reply;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `value` with every object's keys in sorted order: QEMU prints a reply's members in its hash table's order. */
function sortedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedKeys);
  if (typeof value !== 'object' || value === null) return value;
  const o = value as Record<string, unknown>;
  return Object.fromEntries(Object.keys(o).sort().map((k) => [k, sortedKeys(o[k])]));
}

/**
 * Runs `script` against `vdisk serve --qmp` and against qemu-storage-daemon,
 * each in a directory of its own that `prepare` fills, with no NBD server
 * running (the script starts one at the `nbdPath` it is given). Returns both
 * transcripts as text, with the directory and the names the daemons make up
 * for implicit nodes (#blockNNN) made the same and keys sorted, for one comparison.
 */
export async function againstQsd(
  prepare: (dir: string) => void,
  script: (peer: QmpPeer, dir: string, nbdPath: string) => Promise<Transcript>,
): Promise<{ readonly vdisk: string; readonly qsd: string }> {
  const dirs = { vdisk: tmpDir(), qsd: tmpDir() };
  try {
    let vdisk: Transcript = [];
    prepare(dirs.vdisk);
    await withDaemon(dirs.vdisk, async (d) => {
      ok(await d.qmp.execute('nbd-server-stop'));
      vdisk = await script(d, dirs.vdisk, `${dirs.vdisk}/script-nbd.sock`);
      await d.quit();
    });
    // Every image vdisk served and the script wrote through it checks clean (no errors, no leaks: exit 0).
    for (const f of fs.readdirSync(dirs.vdisk).filter((n) => n.endsWith('.qcow2'))) run('qemu-img', ['check', `${dirs.vdisk}/${f}`]);
    let qsd: Transcript = [];
    prepare(dirs.qsd);
    await withQsd(dirs.qsd, [], async (q) => {
      qsd = await script(q, dirs.qsd, `${dirs.qsd}/script-nbd.sock`);
    });
    const text = (t: Transcript, dir: string): string => JSON.stringify(sortedKeys(t), null, 1).replaceAll(dir, 'DIR').replace(/#block\d+/g, '#block');
    return { vdisk: text(vdisk, dirs.vdisk), qsd: text(qsd, dirs.qsd) };
  } finally {
    fs.rmSync(dirs.vdisk, { recursive: true, force: true });
    fs.rmSync(dirs.qsd, { recursive: true, force: true });
  }
}
