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

/** Runs `fn` against a fresh qemu-storage-daemon given `args` besides its QMP monitor at `${dir}/qsd-qmp.sock`. */
export async function withQsd(dir: string, args: readonly string[], fn: (q: QmpPeer) => Promise<void>): Promise<void> {
  const qmpPath = `${dir}/qsd-qmp.sock`;
  const served = await startServer(
    ['qemu-storage-daemon', '--chardev', `socket,path=${qmpPath},server=on,wait=off,id=qmp0`, '--monitor', 'chardev=qmp0,mode=control', ...args],
    qmpPath,
    { probe: true },
  );
  let qmp: TestQmpClient | null = null;
  try {
    qmp = await TestQmpClient.connect(qmpPath);
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
