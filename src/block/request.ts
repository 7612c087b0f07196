/** Checks of a request against a node before it reaches a driver. */
import { VdiskError } from '../errors.js';

/**
 * Throws ERANGE unless [offset, offset+length) lies within a disk of `size`
 * bytes, and EINVAL unless both are non-negative safe integers.
 */
export function checkRequest(file: string, request: { readonly offset: number; readonly length: number }, size: number): void {
  const { offset, length } = request;
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new VdiskError('EINVAL', `Invalid request on '${file}': offset ${offset}, length ${length}`, { file, offset });
  }
  if (offset + length > size) {
    throw new VdiskError(
      'ERANGE',
      `Request at offset ${offset} length ${length} is outside '${file}' (size ${size})`,
      { file, offset },
    );
  }
}

/** Throws EINVAL unless `size` is a usable disk size. */
export function checkSize(file: string, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new VdiskError('EINVAL', `Invalid size ${size} for '${file}'`, { file, field: 'size' });
  }
}
