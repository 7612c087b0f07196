/**
 * Writing a command's output to fd 1 or 2 with write(2), not through
 * process.stdout/stderr: making those streams loads Node's stream modules,
 * 7-8 ms of the start of every command that prints (map, info, check).
 *
 * A descriptor shared in non-blocking mode (EAGAIN) hands the rest, and all
 * later output, to the process stream, which waits for the pipe. A reader
 * that went away (EPIPE, `vdisk map ... | head`) ends the output quietly.
 */
import * as fs from 'node:fs';

/** What the writer writes with; tests substitute their own. */
export interface FdWriterDeps {
  readonly writeSync: (fd: number, bytes: Uint8Array, offset: number, length: number) => number;
  /** The stream taking over after EAGAIN. */
  readonly stream: () => { write(chunk: string | Uint8Array): unknown };
}

const PROCESS_DEPS = (fd: number): FdWriterDeps => ({
  writeSync: (f, bytes, offset, length) => fs.writeSync(f, bytes, offset, length),
  stream: () => (fd === 2 ? process.stderr : process.stdout),
});

export function fdWriter(fd: number, deps: FdWriterDeps = PROCESS_DEPS(fd)): (text: string) => void {
  let viaStream = false;
  let closed = false;
  const { writeSync, stream } = deps;
  return (text) => {
    if (closed || text.length === 0) return;
    if (viaStream) {
      stream().write(text);
      return;
    }
    const bytes = Buffer.from(text, 'utf8');
    let done = 0;
    try {
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EPIPE') {
        closed = true;
        return;
      }
      if (code !== 'EAGAIN') throw e;
      viaStream = true;
      stream().write(bytes.subarray(done));
    }
  };
}
