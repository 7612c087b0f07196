/**
 * qemu-img convert --bitmaps: the persistent bitmaps of the source's top
 * layer are created on the target after the copy (same name, granularity and
 * enabled state) and filled with the source's bits. Inconsistent (in-use)
 * bitmaps stop the command, or with --skip-broken-bitmaps are left out with
 * a warning. qemu-img walks its bitmap list newest first, so the checks and
 * warnings name the bitmaps in reverse directory order.
 */
import type { ImageNode } from '../block/types.js';
import { VdiskError } from '../errors.js';
import type { BitmapInfo } from '../formats/driver.js';
import { type CliContext, PROGRAM, reportError } from './context.js';
import { describeError } from './errors-text.js';

function inconsistent(b: BitmapInfo): boolean {
  return b.flags.includes('in-use');
}

/**
 * Before anything is created: refuses an inconsistent source bitmap unless
 * broken ones are skipped. Returns false after reporting the error.
 */
export async function checkSourceBitmaps(ctx: CliContext, source: ImageNode, skipBroken: boolean): Promise<boolean> {
  if (skipBroken) return true;
  const broken = [...((await source.bitmaps?.list()) ?? [])].reverse().find(inconsistent);
  if (!broken) return true;
  reportError(ctx, `Cannot copy inconsistent bitmap '${broken.name}'`);
  ctx.out.stderr("Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it\n");
  return false;
}

/** Before the copy: the target must be able to store bitmaps (qemu-img reports it after creating the target). */
export function assertTargetTakesBitmaps(target: ImageNode): void {
  if (target.bitmaps?.canStore() !== true) {
    const name = target.format === 'ploop' ? 'parallels' : target.format;
    throw new VdiskError('ENOTSUP', `Format driver '${name}' does not support bitmaps`, { file: target.filename, field: 'bitmaps' });
  }
}

/** After the copy: each consistent source bitmap created on the target and filled from the source. */
export async function copyBitmaps(ctx: CliContext, source: ImageNode, target: ImageNode): Promise<void> {
  const list = (await source.bitmaps?.list()) ?? [];
  for (const b of [...list].reverse()) {
    if (inconsistent(b)) ctx.out.stderr(`${PROGRAM}: warning: Skipping inconsistent bitmap '${b.name}'\n`);
  }
  const ops = target.bitmaps;
  if (!ops) return;
  for (const b of list.filter((x) => !inconsistent(x))) {
    try {
      await ops.add(b.name, { granularity: b.granularity, disabled: !b.flags.includes('auto') });
    } catch (e) {
      throw new VdiskError('EIO', `Failed to create bitmap ${b.name}: ${describeError(e)}`, { file: target.filename, field: 'bitmaps' });
    }
    try {
      await ops.merge(b.name, { name: b.name, image: source });
    } catch (e) {
      throw new VdiskError('EIO', `Failed to populate bitmap ${b.name}: ${describeError(e)}`, { file: target.filename, field: 'bitmaps' });
    }
  }
}
