/**
 * Node's callback fs calls as promises. Not `node:fs/promises`: requiring it
 * loads streams and other modules a command never uses otherwise, about 5 ms
 * of every command's start (and opening an image needs only these).
 */
import * as fs from 'node:fs';

// Reads and writes at an offset run once per request: each makes its promise
// directly, with no closure for `cb` (the callback API with reused buffers is
// several times faster per 4 KiB operation than FileHandle: DEPENDENCIES.md).

/** fs.read of `length` bytes at `position` into `buf` from byte `at`: the bytes read. */
export function preadFd(fd: number, buf: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** fs.write of `length` bytes of `buf` from byte `at`, at `position`: the bytes written. */
export function pwriteFd(fd: number, buf: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buf, at, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** fs.writev of `bufs` at `position`: the bytes written. */
export function pwritevFd(fd: number, bufs: readonly Uint8Array[], position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.writev(fd, bufs as Uint8Array[], position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Runs a callback-style fs call as a promise. */
export function cb<T>(fn: (done: (err: NodeJS.ErrnoException | null, value?: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    fn((err, value) => (err ? reject(err) : resolve(value as T)));
  });
}

export function statBig(path: string): Promise<fs.BigIntStats> {
  return cb<fs.BigIntStats>((done) => fs.stat(path, { bigint: true }, done));
}

/** `mode` applies when the file is created (default 0o666, less the umask, as fs.open). */
export function openFd(path: string, flags: string, mode = 0o666): Promise<number> {
  return cb<number>((done) => fs.open(path, flags, mode, done));
}

export function closeFd(fd: number): Promise<void> {
  return cb<void>((done) => fs.close(fd, done));
}

export function statPath(path: string): Promise<fs.Stats> {
  return cb<fs.Stats>((done) => fs.stat(path, done));
}

export function unlinkPath(path: string): Promise<void> {
  return cb<void>((done) => fs.unlink(path, done));
}

export function renamePath(from: string, to: string): Promise<void> {
  return cb<void>((done) => fs.rename(from, to, done));
}

export function readWholeFile(path: string): Promise<Buffer> {
  return cb<Buffer>((done) => fs.readFile(path, done));
}

export function fsyncFd(fd: number): Promise<void> {
  return cb<void>((done) => fs.fsync(fd, done));
}

export function fdatasyncFd(fd: number): Promise<void> {
  return cb<void>((done) => fs.fdatasync(fd, done));
}

/** Writes all of `text` (UTF-8) at the start of the file open as `fd`. */
export async function writeTextFd(fd: number, text: string): Promise<void> {
  const bytes = Buffer.from(text, 'utf8');
  for (let done = 0; done < bytes.length; ) {
    done += await cb<number>((cbDone) => fs.write(fd, bytes, done, bytes.length - done, done, cbDone));
  }
}
