import fs from 'node:fs';
import os from 'node:os';

/** Wraps a test body so it gets a fresh temporary directory, removed afterwards whatever happens. */
export function withDir(fn: (dir: string) => Promise<void>): () => Promise<void> {
  return async () => {
    const dir = fs.mkdtempSync(os.tmpdir() + '/vdisk-');
    try {
      await fn(dir);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  };
}
