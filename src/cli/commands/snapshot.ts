import { isVdiskError } from '../../errors.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { describeError, strerror } from '../errors-text.js';
import { getopt } from '../getopt.js';
import { SNAPSHOT_HEADER, snapshotRow } from '../image-info.js';
import { openForWriting } from '../open-writable.js';
import { openForReading } from './info.js';

type Action = 'list' | 'apply' | 'create' | 'delete';

/** errno values as qemu-img prints them in "-95 (Operation not supported)". */
const ERRNO: Readonly<Record<string, number>> = { EPERM: 1, ENOENT: 2, EIO: 5, EBUSY: 16, EINVAL: 22, EFBIG: 27, ENOSPC: 28, ENOTSUP: 95 };

const ACTIONS: Readonly<Record<string, Action>> = { l: 'list', a: 'apply', c: 'create', d: 'delete' };

function codeOf(e: unknown): string {
  if (isVdiskError(e)) return e.code;
  if (typeof e === 'object' && e !== null && 'code' in e) return String((e as { code: unknown }).code);
  return 'EIO';
}

/**
 * `vdisk snapshot [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename`,
 * qemu-img snapshot's options, output and messages. As in qemu-img, -a finds
 * the snapshot by id, then by name; -d finds it by name only.
 */
export async function snapshotCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'la:c:d:hqU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  let action: Action | undefined;
  let name = '';
  let forceShare = false;
  let imageOpts = false;
  for (const { key, value } of parsed.options) {
    const a = ACTIONS[key];
    if (a !== undefined) {
      if (action !== undefined) return reportUsage(ctx, "Cannot mix '-l', '-a', '-c', '-d'");
      action = a;
      name = value ?? '';
    } else if (key === 'U') {
      forceShare = true;
    } else if (key === 'image-opts') {
      imageOpts = true;
    } else if (key === 'h') {
      ctx.out.stdout('usage: vdisk snapshot [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename\n');
      return 0;
    }
  }
  if (parsed.operands.length !== 1) return reportUsage(ctx, 'Expecting one image file name');
  const filename = parsed.operands[0] ?? '';
  if (forceShare && action !== 'list') {
    reportError(ctx, `Could not open '${filename}': force-share=on can only be used with read-only images`);
    return 1;
  }
  const node =
    action === 'list'
      ? await openForReading(ctx, filename, { format: undefined, forceShare, imageOpts })
      : await openForWriting(ctx, filename, { format: undefined, imageOpts });
  if (!node) return 1;
  let status = 0;
  try {
    const ops = node.snapshots;
    switch (action) {
      case 'list': {
        const list = ops ? await ops.list() : [];
        if (list.length > 0) ctx.out.stdout(`Snapshot list:\n${SNAPSHOT_HEADER}${list.map(snapshotRow).join('')}`);
        break;
      }
      case 'create':
        try {
          if (!ops) throw Object.assign(new Error('Operation not supported'), { code: 'ENOTSUP' });
          await ops.create({ name });
        } catch (e) {
          const code = codeOf(e);
          reportError(ctx, `Could not create snapshot '${name}': -${ERRNO[code] ?? 5} (${strerror(code === 'ECORRUPT' ? 'EIO' : code)})`);
          status = 1;
        }
        break;
      case 'apply':
        try {
          if (!ops) {
            reportError(ctx, `Could not apply snapshot '${name}': Block driver does not support snapshots`);
            status = 1;
            break;
          }
          await ops.apply(name);
        } catch (e) {
          const code = codeOf(e);
          status = 1;
          // qemu refuses before asking the driver (bdrv_snapshot_goto): no "Failed to load snapshot".
          if (code === 'EBUSY') {
            reportError(ctx, `Could not apply snapshot '${name}': ${describeError(e)}`);
            break;
          }
          // qemu's driver reports the reason itself before the generic message.
          if (code === 'ENOTSUP' && e instanceof Error) reportError(ctx, e.message);
          const reason = code === 'ENOENT' || code === 'ENOTSUP' ? strerror(code) : describeError(e);
          reportError(ctx, `Could not apply snapshot '${name}': Failed to load snapshot: ${reason}`);
        }
        break;
      case 'delete': {
        const found = ops ? (await ops.list()).find((s) => s.name === name) : undefined;
        if (!ops || !found) {
          reportError(ctx, `Could not delete snapshot '${name}': snapshot not found`);
          status = 1;
          break;
        }
        try {
          await ops.delete({ id: found.id, name: found.name });
        } catch (e) {
          reportError(ctx, `Could not delete snapshot '${name}': ${describeError(e)}`);
          status = 1;
        }
        break;
      }
      default:
        break;
    }
  } catch (e) {
    reportError(ctx, describeError(e));
    status = 1;
  } finally {
    try {
      await node.close();
    } catch (e) {
      reportError(ctx, describeError(e));
      status = 1;
    }
  }
  return status;
}
