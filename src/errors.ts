/**
 * The one error type of vdisk. Every failure carries a stable `code` that callers
 * match on (the NBD server maps it to an NBD errno, the CLI to an exit status,
 * QMP to a GenericError) and the context needed to find the problem: the file,
 * the byte offset and the on-disk field involved.
 */
export type ErrorCode =
  | 'EINVAL' // a request or option is invalid
  | 'EIO' // the host failed an I/O
  | 'ENOSPC' // no space left on the host
  | 'EPERM' // the operation is not allowed (read-only image, locked)
  | 'ENOTSUP' // a valid feature vdisk does not implement
  | 'ECORRUPT' // the image's metadata is inconsistent
  | 'ENOENT' // a file does not exist
  | 'ENXIO' // seek past the end of the disk
  | 'EBUSY' // the image or node is in use
  | 'ERANGE' // a request lies outside the disk
  | 'EFBIG'; // a value is too large to handle

export interface ErrorContext {
  /** The image or host file the error is about. */
  readonly file?: string;
  /** The byte offset in `file` (host offset) or on the virtual disk (guest offset). */
  readonly offset?: number | bigint;
  /** The on-disk field or option involved, e.g. `l1_table_offset`. */
  readonly field?: string;
}

export class VdiskError extends Error {
  override readonly name = 'VdiskError';
  readonly code: ErrorCode;
  readonly context: ErrorContext;

  constructor(code: ErrorCode, message: string, context: ErrorContext = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.context = context;
  }
}

/** True when `e` is a VdiskError, optionally with the given code. */
export function isVdiskError(e: unknown, code?: ErrorCode): e is VdiskError {
  return e instanceof VdiskError && (code === undefined || e.code === code);
}

/** Translates a Node system error (ENOENT, ENOSPC, ...) into a VdiskError about `file`. */
export function fromSystemError(e: unknown, file: string, what: string): VdiskError {
  if (e instanceof VdiskError) return e;
  const sysCode = typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '';
  const detail = e instanceof Error ? e.message : String(e);
  const code: ErrorCode =
    sysCode === 'ENOENT'
      ? 'ENOENT'
      : sysCode === 'ENOSPC'
        ? 'ENOSPC'
        : sysCode === 'EACCES' || sysCode === 'EPERM' || sysCode === 'EROFS'
          ? 'EPERM'
          : sysCode === 'EAGAIN' || sysCode === 'EBUSY'
            ? 'EBUSY'
            : sysCode === 'EINVAL'
              ? 'EINVAL'
              : 'EIO';
  return new VdiskError(code, `Could not ${what} '${file}': ${detail}`, { file }, { cause: e });
}
