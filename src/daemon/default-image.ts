import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createImage } from '../block/index.js';
import { VdiskError, isVdiskError } from '../errors.js';
import type { FormatName } from '../formats/driver.js';

/** Size of the image `vdisk serve` creates when it is given none. */
export const DEFAULT_IMAGE_SIZE = 1024 * 1024 * 1024;

/** Where vdisk keeps its own images: $VDISK_DATA_DIR, else $XDG_DATA_HOME/vdisk, else ~/.local/share/vdisk. */
export function dataDirectory(env: NodeJS.ProcessEnv = process.env): string {
  if (env['VDISK_DATA_DIR']) return env['VDISK_DATA_DIR'];
  const xdg = env['XDG_DATA_HOME'];
  return path.join(xdg && xdg !== '' ? xdg : path.join(os.homedir(), '.local', 'share'), 'vdisk');
}

export interface DefaultImage {
  readonly path: string;
  readonly format: FormatName;
  readonly created: boolean;
}

/**
 * The default image in `dir`: default.qcow2 (1 GiB), created on first use.
 * Until this build can create qcow2, a sparse default.raw is used instead.
 */
export async function ensureDefaultImage(dir: string): Promise<DefaultImage> {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new VdiskError('EIO', `Cannot create data directory '${dir}': ${e instanceof Error ? e.message : String(e)}`, { file: dir });
  }
  for (const format of ['qcow2', 'raw'] as const) {
    const file = path.join(dir, `default.${format}`);
    if (fs.existsSync(file)) return { path: file, format, created: false };
  }
  const qcow2 = path.join(dir, 'default.qcow2');
  try {
    await createImage(qcow2, 'qcow2', { size: DEFAULT_IMAGE_SIZE, options: {} });
    return { path: qcow2, format: 'qcow2', created: true };
  } catch (e) {
    // Only a missing qcow2 implementation falls back; any other failure is the user's to see.
    if (!isVdiskError(e, 'EINVAL') && !isVdiskError(e, 'ENOTSUP')) throw e;
    fs.rmSync(qcow2, { force: true });
  }
  const raw = path.join(dir, 'default.raw');
  await createImage(raw, 'raw', { size: DEFAULT_IMAGE_SIZE, options: {} });
  return { path: raw, format: 'raw', created: true };
}
