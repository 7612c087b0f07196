/**
 * `vdisk commit [-q] [-f fmt] [-t cache] [-b base] [-r rate] [-d] [-p] filename`,
 * qemu-img commit: the image's data is merged into its backing file (or into
 * `base`, further down the chain) by the same CommitJob the daemon runs, and
 * then the image is emptied unless -d or -b is given.
 */
import { resolve } from 'node:path';
import { BlockNode } from '../../block/node.js';
import type { CacheMode } from '../../formats/driver.js';
import { CommitJob } from '../../jobs/commit.js';
import { isVdiskError } from '../../errors.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { parseQemuSize } from '../create-options.js';
import { describeError } from '../errors-text.js';
import { commandProgress, progressModeOption, PROGRESS_LONG_OPTION } from '../command-progress.js';
import { type ProgressMode } from '../format/progress.js';
import { getopt } from '../getopt.js';
import { openOperandOrReport } from '../image-operand.js';
import { parseCacheMode } from '../cache-mode.js';

const PROGRESS_POLL_MS = 100;

interface CommitArgs {
  format: string | undefined;
  cache: CacheMode | undefined;
  base: string | undefined;
  speed: number;
  keep: boolean;
  progress: boolean;
  progressMode: ProgressMode | undefined;
  quiet: boolean;
  file: string;
  /** --image-opts: `file` is an option string. */
  imageOpts: boolean;
}

export async function commitCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hf:ht:b:dpqr:',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      PROGRESS_LONG_OPTION,
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const args: CommitArgs = { format: undefined, cache: undefined, base: undefined, speed: 0, keep: false, progress: false, progressMode: undefined, quiet: false, file: '', imageOpts: false };
  for (const { key, value = '' } of parsed.options) {
    if (key === 'h') {
      ctx.out.stdout('usage: vdisk commit [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename\n');
      return 0;
    } else if (key === 'f') args.format = value;
    else if (key === 'image-opts') args.imageOpts = true;
    else if (key === 'b') {
      args.base = value;
      // -b implies -d: the images above base still need their data (qemu-img).
      args.keep = true;
    } else if (key === 'd') args.keep = true;
    else if (key === 'p') args.progress = true;
    else if (key === 'progress') {
      const mode = progressModeOption(ctx, value);
      if (mode === undefined) return 1;
      args.progressMode = mode;
    }
    else if (key === 'q') args.quiet = true;
    else if (key === 't') {
      const mode = parseCacheMode(value);
      if (mode === undefined) {
        reportError(ctx, `Invalid cache option: ${value}`);
        return 1;
      }
      args.cache = mode;
    } else if (key === 'r') {
      const n = parseQemuSize(value);
      if (n === undefined || !Number.isSafeInteger(n)) {
        reportError(ctx, 'Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for\nvdisk: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.');
        return 1;
      }
      args.speed = n;
    }
  }
  if (parsed.operands.length !== 1) return reportUsage(ctx, 'Expecting one image file name');
  args.file = parsed.operands[0] ?? '';
  return runCommit(ctx, args);
}

async function runCommit(ctx: CliContext, args: CommitArgs): Promise<number> {
  const node = await openOperandOrReport(ctx, args.file, { format: args.format, imageOpts: args.imageOpts, readOnly: false, cache: args.cache });
  if (!node) return 1;
  if (!(node instanceof BlockNode)) {
    await node.close();
    reportError(ctx, `Cannot commit '${args.file}': not a local image`);
    return 1;
  }
  const top = node;
  try {
    if (!top.backing) {
      reportError(ctx, 'Image does not have a backing file');
      return 1;
    }
    let base = top.backing;
    if (args.base !== undefined) {
      const wanted = args.base;
      const found = top.chain().slice(1).find((n) => n.filename === wanted || resolve(n.filename) === resolve(wanted));
      if (!found) {
        reportError(ctx, `Did not find '${wanted}' in the backing chain of '${args.file}'`);
        return 1;
      }
      base = found;
    }
    const job = new CommitJob({ id: 'commit', top, base, active: false, speed: args.speed });
    const progress = commandProgress(ctx, { p: args.progress, quiet: args.quiet, mode: args.progressMode }, { phase: 'commit' });
    // The commit job's len starts as the top image's size (QEMU's commit_run).
    progress.setTotal(top.length);
    progress.set(0);
    const timer = setInterval(() => (job.len > 0 ? progress.bytes(job.offset, job.len) : progress.set(0)), PROGRESS_POLL_MS);
    try {
      job.start();
      await job.wait();
    } finally {
      clearInterval(timer);
    }
    if (job.error !== undefined) {
      reportError(ctx, `Block job failed: ${job.error}`);
      return 1;
    }
    progress.bytes(job.len, job.len);
    progress.end();
    if (!args.keep) {
      try {
        await top.makeEmpty();
      } catch (e) {
        if (!isVdiskError(e, 'ENOTSUP')) throw e;
      }
    }
    if (!args.quiet) ctx.out.stdout('Image committed.\n');
    return 0;
  } catch (e) {
    reportError(ctx, describeError(e));
    return 1;
  } finally {
    await top.close().catch((e: unknown) => reportError(ctx, describeError(e)));
  }
}
