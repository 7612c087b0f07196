import type { ErrorCode } from '../../errors.js';
import { isVdiskError } from '../../errors.js';
import { NbdErrno } from './constants.js';

const BY_CODE: Readonly<Record<ErrorCode, number>> = {
  EINVAL: NbdErrno.EINVAL,
  EIO: NbdErrno.EIO,
  ENOSPC: NbdErrno.ENOSPC,
  EPERM: NbdErrno.EPERM,
  ENOTSUP: NbdErrno.ENOTSUP,
  ECORRUPT: NbdErrno.EIO,
  ENOENT: NbdErrno.EIO,
  ENXIO: NbdErrno.EINVAL,
  EBUSY: NbdErrno.EIO,
  ERANGE: NbdErrno.EINVAL,
  // proto.md: EFBIG and EDQUOT are reported as ENOSPC.
  EFBIG: NbdErrno.ENOSPC,
};

/** The NBD error number to send for a failure; anything that is not a VdiskError is EIO. */
export function nbdErrnoOf(e: unknown): number {
  return isVdiskError(e) ? (BY_CODE[e.code] ?? NbdErrno.EIO) : NbdErrno.EIO;
}
