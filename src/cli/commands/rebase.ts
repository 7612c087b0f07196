/**
 * `vdisk rebase`: qemu-img rebase (qemu-img.c img_rebase). Safe mode reads
 * the overlay's unallocated ranges through the old backing chain and through
 * the new one, and writes into the overlay every 512-byte run where they
 * differ, so the guest sees the same disk afterwards; then the backing
 * reference in the header changes. `-u` changes only the reference.
 * `-b ""` removes the backing (the overlay then holds everything).
 */
import type { ImageNode } from '../../block/types.js';
import type { BackingReference, CacheMode, FormatName } from '../../formats/driver.js';
import { cacheOption } from '../cache-mode.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { describeError } from '../errors-text.js';
import { commandProgress, progressModeOption, PROGRESS_LONG_OPTION } from '../command-progress.js';
import { type ProgressMode, type ProgressPrinter } from '../format/progress.js';
import { getopt } from '../getopt.js';
import { resolveBackingPath } from '../image-path.js';
import { openForWriting } from '../open-writable.js';
import { toFormatName } from './create.js';
import { openForReading } from './info.js';

const IO_BUF_SIZE = 2 * 1024 * 1024;
const SECTOR = 512;

interface RebaseArgs {
  format: string | undefined;
  backingFormat: string | undefined;
  backing: string | undefined;
  unsafe: boolean;
  progress: boolean;
  progressMode: ProgressMode | undefined;
  quiet: boolean;
  forceShare: boolean;
  /** --image-opts: the overlay operand is an option string (-b stays a file name). */
  imageOpts: boolean;
  /** -t: the overlay's cache mode (its current backing chain opens with it). */
  cache: CacheMode | undefined;
  /** -T: the new backing file's cache mode. */
  sourceCache: CacheMode | undefined;
}

type BackingWriter = (ref: BackingReference | null) => Promise<void>;

/** The driver's changeBackingFile capability behind a node, when its format has one. */
function backingWriter(node: ImageNode): BackingWriter | undefined {
  const driver: unknown = (node as { driver?: unknown }).driver;
  if (typeof driver !== 'object' || driver === null) return undefined;
  const change: unknown = (driver as { changeBackingFile?: unknown }).changeBackingFile;
  return typeof change === 'function' ? (ref) => (change as BackingWriter).call(driver, ref) : undefined;
}

/** `vdisk rebase [-f fmt] [-t cache] [-T src_cache] [-p] [-q] [-u] [-U] -b backing_file [-F backing_fmt] filename` */
export async function rebaseCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hf:F:b:upt:T:qU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
      PROGRESS_LONG_OPTION,
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const args: RebaseArgs = { format: undefined, backingFormat: undefined, backing: undefined, unsafe: false, progress: false, progressMode: undefined, quiet: false, forceShare: false, imageOpts: false, cache: undefined, sourceCache: undefined };
  for (const { key, value = '' } of parsed.options) {
    if (key === 'f') args.format = value;
    else if (key === 'F') args.backingFormat = value;
    else if (key === 'b') args.backing = value;
    else if (key === 'u') args.unsafe = true;
    else if (key === 'p') args.progress = true;
    else if (key === 'progress') {
      const mode = progressModeOption(ctx, value);
      if (mode === undefined) return 1;
      args.progressMode = mode;
    }
    else if (key === 'q') args.quiet = true;
    else if (key === 'U') args.forceShare = true;
    else if (key === 'image-opts') args.imageOpts = true;
    else if (key === 't' || key === 'T') {
      const checked = cacheOption(value, key === 'T' ? 'source' : 'cache');
      if (!checked.ok) {
        reportError(ctx, checked.message);
        return 1;
      }
      if (key === 't') args.cache = checked.mode;
      else args.sourceCache = checked.mode;
    }
    else if (key === 'h') return reportUsage(ctx, 'see qemu-img(1) for the rebase options');
  }
  if (parsed.operands.length !== 1) return reportUsage(ctx, 'Expecting one image file name');
  if (!args.unsafe && args.backing === undefined) return reportUsage(ctx, 'Must specify backing file (-b) or use unsafe mode (-u)');
  const filename = parsed.operands[0] ?? '';
  const newName = args.backing ?? '';
  let newFormat: FormatName | null = null;
  if (args.backingFormat !== undefined) {
    newFormat = toFormatName(args.backingFormat) ?? null;
    if (newFormat === null) {
      reportError(ctx, `Invalid format name: '${args.backingFormat}'`);
      return 1;
    }
  }
  const progress = commandProgress(ctx, { p: args.progress, quiet: args.quiet, mode: args.progressMode }, { phase: 'rebase' });
  const overlay = await openForWriting(ctx, filename, {
    format: args.format,
    imageOpts: args.imageOpts,
    ...(args.cache ? { cache: args.cache } : {}),
    ...(args.unsafe ? { noBacking: true } : {}),
  });
  if (!overlay) return 1;
  try {
    const change = backingWriter(overlay);
    if (!change) {
      reportError(ctx, `Could not change the backing file to '${newName}': Operation not supported`);
      return 1;
    }
    if (newName !== '' && newFormat === null) {
      reportError(ctx, `Could not change the backing file to '${newName}': backing format must be specified`);
      return 1;
    }
    progress.set(0);
    if (!args.unsafe) {
      // A relative new backing file is found next to the overlay's file (the operand may be an option string).
      const status = await copyDifferences(ctx, { overlay, filename: overlay.filename, newName, newFormat, args, progress });
      if (status !== 0) return status;
    }
    try {
      await change(newName === '' ? null : { filename: newName, format: newFormat });
    } catch (e) {
      reportError(ctx, `Could not change the backing file to '${newName}': ${describeError(e)}`);
      return 1;
    }
    progress.bytes(overlay.length, overlay.length);
    return 0;
  } finally {
    progress.end();
    await overlay.close().catch(() => undefined);
  }
}

interface CopyJob {
  readonly overlay: ImageNode;
  readonly filename: string;
  readonly newName: string;
  readonly newFormat: FormatName | null;
  readonly args: RebaseArgs;
  readonly progress: ProgressPrinter;
}

/** Copies into the overlay what would change when the new backing replaces the old one. */
async function copyDifferences(ctx: CliContext, job: CopyJob): Promise<number> {
  const { overlay } = job;
  let fresh: ImageNode | null = null;
  if (job.newName !== '') {
    const path = resolveBackingPath(job.filename, job.newName);
    fresh =
      (await openForReading(ctx, path, {
        format: job.newFormat ?? undefined,
        forceShare: job.args.forceShare,
        ...(job.args.sourceCache ? { cache: job.args.sourceCache } : {}),
      })) ?? null;
    if (!fresh) return 1;
  }
  try {
    const oldBuf = new Uint8Array(IO_BUF_SIZE);
    const newBuf = new Uint8Array(IO_BUF_SIZE);
    const size = overlay.length;
    job.progress.setTotal(size);
    for (let offset = 0; offset < size; ) {
      const extents = await overlay.layerStatus(offset, Math.min(size - offset, 2 ** 32));
      for (const x of extents) {
        if (!x.allocated) await copyRange({ overlay, fresh, offset, length: x.length, oldBuf, newBuf });
        offset += x.length;
        job.progress.bytes(offset, size);
      }
      if (extents.length === 0) break;
    }
    return 0;
  } catch (e) {
    reportError(ctx, `Error while rebasing '${job.filename}': ${describeError(e)}`);
    return 1;
  } finally {
    await fresh?.close().catch(() => undefined);
  }
}

async function copyRange(r: {
  readonly overlay: ImageNode;
  readonly fresh: ImageNode | null;
  readonly offset: number;
  readonly length: number;
  readonly oldBuf: Uint8Array;
  readonly newBuf: Uint8Array;
}): Promise<void> {
  const end = r.offset + r.length;
  for (let pos = r.offset; pos < end; ) {
    const n = Math.min(IO_BUF_SIZE, end - pos);
    // The overlay reads the old backing here: these ranges are unallocated in it.
    const oldData = r.oldBuf.subarray(0, n);
    await r.overlay.read(pos, oldData);
    const newData = r.newBuf.subarray(0, n);
    newData.fill(0);
    if (r.fresh) {
      const inside = Math.max(0, Math.min(n, r.fresh.length - pos));
      if (inside > 0) await r.fresh.read(pos, newData.subarray(0, inside));
    }
    // Write the runs of sectors that differ, each in one request.
    let runStart = -1;
    for (let s = 0; s < n + SECTOR; s += SECTOR) {
      const differs = s < n && !sameBytes(oldData.subarray(s, Math.min(n, s + SECTOR)), newData.subarray(s, Math.min(n, s + SECTOR)));
      if (differs && runStart < 0) runStart = s;
      if (!differs && runStart >= 0) {
        await r.overlay.write(pos + runStart, oldData.slice(runStart, Math.min(n, s)));
        runStart = -1;
      }
    }
    pos += n;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
