/**
 * QEMU's image locking (block/file-posix.c raw_apply_lock_bytes /
 * raw_check_lock_bytes), so vdisk and QEMU processes see each other's use of an
 * image file.
 *
 * Each block permission has a bit number (BLK_PERM_CONSISTENT_READ = bit 0,
 * WRITE = 1, WRITE_UNCHANGED = 2, RESIZE = 3). A user of the file holds a shared
 * OFD lock on byte 100 + bit for each permission it uses, and on byte 200 + bit
 * for each permission it does not let others use. Opening then fails when:
 * - a permission it wants is refused by someone (byte 200 + bit is locked): "Failed to get "write" lock";
 * - a permission it refuses is in use by someone (byte 100 + bit is locked): "Failed to get shared "write" lock".
 * All locks are shared (read) locks; conflicts are found by asking whether an
 * exclusive lock could be taken (F_OFD_GETLK), exactly as QEMU does, so readers
 * never block readers.
 *
 * The locks live on a file description of their own, held until `release`.
 * Where the file system cannot lock, the lock is a no-op and `supported` is false.
 */
import { VdiskError } from '../errors.js';
import { nativeHost } from './native.js';
import { closeFd, openFd } from './fs-calls.js';

/** Block permissions as QEMU numbers them (include/block/block-common.h, BLK_PERM_*). */
export const PERM = {
  consistentRead: 0,
  write: 1,
  writeUnchanged: 2,
  resize: 3,
} as const;

export type PermName = keyof typeof PERM;

const PERM_TEXT: Readonly<Record<PermName, string>> = {
  consistentRead: 'consistent read',
  write: 'write',
  writeUnchanged: 'write unchanged',
  resize: 'resize',
};

const PERM_BASE = 100;
const SHARED_BASE = 200;

/** Errors that mean "this file system has no byte-range locks". */
const UNSUPPORTED = new Set(['ENOLCK', 'EOPNOTSUPP', 'ENOTSUP', 'ENOSYS', 'EINVAL']);

export interface LockRequest {
  /** Permissions this user takes. */
  readonly perms: readonly PermName[];
  /** Permissions this user does not let others take. */
  readonly unshared: readonly PermName[];
}

/** The permissions QEMU's tools use on an image file, by format kind and access. */
export function imageLockRequest(options: { readonly readOnly: boolean; readonly metadataFormat: boolean; readonly forceShare: boolean }): LockRequest {
  const perms: PermName[] = options.readOnly ? ['consistentRead'] : ['consistentRead', 'write'];
  // A format with metadata (qcow2, parallels) needs to grow its file and never
  // lets another writer change it underneath (bdrv_default_perms_for_storage).
  if (options.metadataFormat && !options.readOnly) perms.push('resize');
  const unshared: PermName[] = options.metadataFormat && !options.forceShare ? ['write', 'resize'] : [];
  return { perms, unshared };
}

export class ImageLock {
  private constructor(
    /** The descriptor the locks are held on (closing it drops them all). */
    private readonly fd: number | null,
    /** False when the file system (or this build) cannot lock; nothing is held then. */
    readonly supported: boolean,
  ) {}

  /**
   * Takes the locks of `request` on `path`, or fails with EBUSY and QEMU's
   * message when another user of the file conflicts.
   */
  static async acquire(path: string, request: LockRequest): Promise<ImageLock> {
    const native = nativeHost();
    if (!native) return new ImageLock(null, false);
    const fd = await openFd(path, 'r');
    try {
      for (const p of request.perms) {
        if (!native.setLock(fd, PERM_BASE + PERM[p], 1, 'r')) throw conflict(path, `Failed to lock byte ${PERM_BASE + PERM[p]}`);
      }
      for (const p of request.unshared) {
        if (!native.setLock(fd, SHARED_BASE + PERM[p], 1, 'r')) throw conflict(path, `Failed to lock byte ${SHARED_BASE + PERM[p]}`);
      }
      // QEMU checks in this order: wanted permissions first, then the refused ones.
      for (const p of request.perms) {
        if (native.getLock(fd, SHARED_BASE + PERM[p], 1, 'w')) throw conflict(path, `Failed to get "${PERM_TEXT[p]}" lock`);
      }
      for (const p of request.unshared) {
        if (native.getLock(fd, PERM_BASE + PERM[p], 1, 'w')) throw conflict(path, `Failed to get shared "${PERM_TEXT[p]}" lock`);
      }
      return new ImageLock(fd, true);
    } catch (e) {
      await closeFd(fd);
      const code = typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '';
      if (!(e instanceof VdiskError) && UNSUPPORTED.has(code)) return new ImageLock(null, false);
      throw e;
    }
  }

  /** Drops every lock (closing the file description releases them all). */
  async release(): Promise<void> {
    if (this.fd !== null) await closeFd(this.fd);
  }
}

function conflict(path: string, what: string): VdiskError {
  return new VdiskError('EBUSY', `${what}\nIs another process using the image [${path}]?`, { file: path, field: 'lock' });
}

/**
 * Makes `target`'s `close` also release `lock` (after the target closed, so
 * the image is never written unlocked), and returns it. An own `close` shadows
 * the class's: every other call goes to the object itself, with no wrapper on
 * the request path (a Proxy here had cost a trap and a lookup per read and write).
 */
export function closingWithLock<T extends { close(): Promise<void> }>(target: T, lock: ImageLock): T {
  const closeTarget = target.close.bind(target);
  const close = async (): Promise<void> => {
    try {
      await closeTarget();
    } finally {
      await lock.release();
    }
  };
  Object.defineProperty(target, 'close', { value: close, configurable: true, writable: true });
  return target;
}
