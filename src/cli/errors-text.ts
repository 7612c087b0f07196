import { isVdiskError } from '../errors.js';

/** strerror() texts for the errno names Node reports, so messages read like QEMU's. */
const STRERROR: Readonly<Record<string, string>> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EROFS: 'Read-only file system',
  ENOSPC: 'No space left on device',
  EIO: 'Input/output error',
  EINVAL: 'Invalid argument',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  EEXIST: 'File exists',
  EAGAIN: 'Resource temporarily unavailable',
  EBUSY: 'Device or resource busy',
  EFBIG: 'File too large',
  ENOTSUP: 'Operation not supported',
  ERANGE: 'Numerical result out of range',
  ENXIO: 'No such device or address',
  ECORRUPT: 'Input/output error',
};

/** strerror() of an errno name; unknown names print as themselves. */
export function strerror(code: string): string {
  return STRERROR[code] ?? code;
}

function systemCode(e: unknown): string | undefined {
  if (typeof e === 'object' && e !== null && 'code' in e && 'syscall' in e) {
    const code = (e as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

/**
 * The text after "Could not open 'f': " for an error from the engine. A failed
 * system call prints as strerror (as QEMU does); an engine error as its message.
 */
export function describeError(e: unknown): string {
  const sys = systemCode(e) ?? (isVdiskError(e) ? systemCode(e.cause) : undefined);
  if (sys !== undefined && (!isVdiskError(e) || /^Could not \w+ '/.test(e.message) || e.message.includes(sys))) {
    const file = isVdiskError(e) ? e.context.file : undefined;
    const own = isVdiskError(e) ? /^Could not (\w+) '/.exec(e.message) : null;
    if (own && file !== undefined) return `Could not ${own[1] ?? 'open'} '${file}': ${strerror(sys)}`;
    return strerror(sys);
  }
  if (e instanceof Error) return e.message;
  return String(e);
}

/** The errno-like text for an I/O failure inside qemu-io ("read failed: Input/output error"). */
export function ioFailureText(e: unknown): string {
  const sys = systemCode(e) ?? (isVdiskError(e) ? systemCode(e.cause) : undefined);
  if (sys !== undefined) return strerror(sys);
  if (isVdiskError(e)) {
    // QEMU's block layer answers out-of-range requests with EIO.
    return strerror(e.code === 'ERANGE' ? 'EIO' : e.code);
  }
  return strerror('EIO');
}

/** The errno name of a failed system call in `e` or its causes, if any. */
function errnoIn(e: unknown): string | undefined {
  for (let cur: unknown = e, depth = 0; cur !== undefined && cur !== null && depth < 8; depth++) {
    if (typeof cur === 'object' && 'code' in cur && 'syscall' in cur) {
      const code = (cur as { code: unknown }).code;
      if (typeof code === 'string') return code;
    }
    cur = typeof cur === 'object' && 'cause' in cur ? (cur as { cause: unknown }).cause : undefined;
  }
  return undefined;
}

/**
 * The text of a failure to create the image file `path`: QEMU's file driver says
 * "Could not create 'f': strerror" when the open(O_CREAT) fails; other failures
 * keep the engine's message.
 */
export function createFailureText(path: string, e: unknown): string {
  const sys = errnoIn(e);
  if (sys !== undefined && (!(e instanceof Error) || e.message.startsWith(`Could not open '${path}'`) || e.message.startsWith(`Could not create '${path}'`))) {
    return `Could not create '${path}': ${strerror(sys)}`;
  }
  return isVdiskError(e) ? e.message : describeError(e);
}
