// qemu-storage-daemon as an oracle and a peer: started with a QMP monitor on a unix socket plus any
// --blockdev/--nbd-server/--export arguments, driven with the same QMP test client as `vdisk serve --qmp`,
// and always stopped (QMP quit, then SIGTERM, then SIGKILL, each bounded) so a failing test never hangs.
import { TestQmpClient } from '../../unit/qmp/qmp-client.js';
import { startServer } from './serve-process.js';
import { ok, stopProcess, within } from './e2e-daemon.js';

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
