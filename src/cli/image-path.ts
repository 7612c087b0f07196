import { isAbsolute } from 'node:path';

/**
 * QEMU's path_combine: a relative backing name is relative to the directory of
 * the image naming it, joined without normalising ("sub/../a.qcow2"), exactly
 * as qemu-img prints it as "full-backing-filename".
 */
export function resolveBackingPath(imageFilename: string, backing: string): string {
  if (isAbsolute(backing)) return backing;
  const slash = imageFilename.lastIndexOf('/');
  if (slash < 0) return backing;
  return imageFilename.slice(0, slash + 1) + backing;
}
