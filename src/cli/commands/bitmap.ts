import type { ImageNode } from '../../block/types.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { parseQemuSize } from '../create-options.js';
import { describeError } from '../errors-text.js';
import { getopt } from '../getopt.js';
import { openForWriting } from '../open-writable.js';
import { openForReading } from './info.js';

type Op = 'add' | 'remove' | 'clear' | 'enable' | 'disable' | 'merge';

interface Action {
  readonly op: Op;
  /** Source bitmap of --merge. */
  readonly source?: string;
}

const OPS: readonly Op[] = ['add', 'remove', 'clear', 'enable', 'disable', 'merge'];

/**
 * `vdisk bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)...
 * [-b source_file [-F source_fmt]] [-g granularity] [-f fmt] filename bitmap`,
 * qemu-img bitmap's options and messages; actions run in the order given.
 */
export async function bitmapCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'b:f:F:g:h',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      ...OPS.map((op) => ({ name: op, hasArg: op === 'merge', key: op })),
      { name: 'granularity', hasArg: true, key: 'g' },
      { name: 'source-file', hasArg: true, key: 'b' },
      { name: 'source-format', hasArg: true, key: 'F' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const actions: Action[] = [];
  let format: string | undefined;
  let srcFile: string | undefined;
  let srcFormat: string | undefined;
  let granularity = 0;
  // --image-opts names the image only: the -b source of --merge stays a file name, as in qemu-img.
  let imageOpts = false;
  for (const { key, value } of parsed.options) {
    if ((OPS as readonly string[]).includes(key)) actions.push({ op: key as Op, ...(key === 'merge' ? { source: value ?? '' } : {}) });
    else if (key === 'f') format = value;
    else if (key === 'image-opts') imageOpts = true;
    else if (key === 'b') srcFile = value;
    else if (key === 'F') srcFormat = value;
    else if (key === 'g') {
      const g = parseQemuSize(value ?? '');
      if (g === undefined) {
        reportError(ctx, 'Invalid granularity specified. You may use k, M, G, T, P or E suffixes for');
        reportError(ctx, 'kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.');
        return 1;
      }
      granularity = g;
    } else if (key === 'h') {
      ctx.out.stdout('usage: vdisk bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [-f fmt] filename bitmap\n');
      return 0;
    }
  }
  const fail = (message: string): number => {
    reportError(ctx, message);
    return 1;
  };
  if (actions.length === 0) return fail('Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
  if (granularity !== 0 && !actions.some((a) => a.op === 'add')) return fail('granularity only supported with --add');
  if (srcFormat !== undefined && srcFile === undefined) return fail('-F only supported with -b');
  if (srcFile !== undefined && !actions.some((a) => a.op === 'merge')) return fail('Merge bitmap source file only supported with --merge');
  if (parsed.operands.length !== 2) return fail('Expecting filename and bitmap name');
  const [filename = '', bitmap = ''] = parsed.operands;
  const node = await openForWriting(ctx, filename, { format, imageOpts, noBacking: true });
  if (!node) return 1;
  let source: ImageNode | undefined;
  let status = 0;
  try {
    if (srcFile !== undefined) {
      source = await openForReading(ctx, srcFile, { format: srcFormat, forceShare: false, noBacking: true });
      if (!source) return 1;
    }
    const ops = node.bitmaps;
    for (const act of actions) {
      try {
        if (!ops) throw new Error(`Can't store persistent bitmaps to '${filename}': Operation not supported`);
        switch (act.op) {
          case 'add':
            await ops.add(bitmap, granularity !== 0 ? { granularity } : {});
            break;
          case 'remove':
            await ops.remove(bitmap);
            break;
          case 'clear':
            await ops.clear(bitmap);
            break;
          case 'enable':
            await ops.enable(bitmap);
            break;
          case 'disable':
            await ops.disable(bitmap);
            break;
          case 'merge':
            await ops.merge(bitmap, { name: act.source ?? '', ...(source ? { image: source } : {}) });
            break;
        }
      } catch (e) {
        reportError(ctx, `Operation ${act.op} on bitmap ${bitmap} failed: ${describeError(e)}`);
        status = 1;
        break;
      }
    }
  } finally {
    for (const n of [source, node]) {
      try {
        await n?.close();
      } catch (e) {
        reportError(ctx, describeError(e));
        status = 1;
      }
    }
  }
  return status;
}
