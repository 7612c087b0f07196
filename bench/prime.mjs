// Priming a VM's free memory before a timed command that fills the page cache
// (run.mjs --prime-mib, ab.mjs). On VMs whose free memory the host takes back
// (free page reporting), a command that fills the page cache otherwise pays for
// the host handing that memory back. The reporting runs about 2 s after memory
// is freed, so this first waits that long for what the previous run freed, then
// writes `mib` MiB to `scratch` and deletes it. The caller syncs afterwards.
import * as fs from 'node:fs';

/** How long the host takes to report memory the guest freed (measured: about 2 s). */
const REPORTING_DELAY_MS = 2500;

export function primeFreeMemory(scratch, mib) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, REPORTING_DELAY_MS);
  if (mib <= 0) return;
  const block = Buffer.alloc(1024 * 1024, 0x5a);
  const fd = fs.openSync(scratch, 'w');
  try {
    for (let i = 0; i < mib; i++) fs.writeSync(fd, block);
  } finally {
    fs.closeSync(fd);
    fs.rmSync(scratch, { force: true });
  }
}
