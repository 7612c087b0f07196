/**
 * QEMU's two protocol drivers for local files, as named in option strings and
 * blockdev-add: `file` opens regular files only, `host_device` block and
 * character devices only (file-posix.c refuses the other kind by name). A
 * plain filename takes whichever fits, as QEMU's probe does; vdisk opens both
 * kinds the same way (see HostFile.device).
 */
import * as fs from 'node:fs';

export type FileProtocol = 'file' | 'host_device';

export function isFileProtocol(driver: string): driver is FileProtocol {
  return driver === 'file' || driver === 'host_device';
}

/** Why `driver` refuses `path` (QEMU's words), or undefined when it takes it or the path cannot be looked at (the open then says why). */
export function fileProtocolProblem(driver: FileProtocol, path: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch {
    return undefined;
  }
  const device = st.isBlockDevice() || st.isCharacterDevice();
  if (driver === 'file' && !st.isFile()) return `'file' driver requires '${path}' to be a regular file`;
  if (driver === 'host_device' && !device) return `'host_device' driver requires '${path}' to be either a character or block device`;
  return undefined;
}
