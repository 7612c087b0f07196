/**
 * `vdisk ploop list|snapshot|merge DiskDescriptor.xml`: the ploop stack
 * operations of the ploop tools, offline.
 *
 *   list      the deltas, bottom first, as `ploop snapshot-list` prints them
 *             (PARENT_UUID, C = `*` for the top, UUID, FNAME)
 *   snapshot  a new empty top delta over the current top
 *   merge     the top delta into the one below it (default), or with
 *             `--forward [--depth N]` the delta N below the top (default 1)
 *             into the delta above it; the descriptor is updated and the merged
 *             delta's file deleted
 */
import { resolve } from 'node:path';
import { openImage } from '../../block/index.js';
import { isVdiskError } from '../../errors.js';
import { readDescriptorModel, readDescriptorText, snapshotStack } from '../../formats/ploop/index.js';
import { createPloopMerge } from '../../jobs/ploop-merge.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { getopt } from '../getopt.js';

const USAGE = 'usage: vdisk ploop list|snapshot|merge [--forward] [--depth N] DiskDescriptor.xml';

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function listStack(ctx: CliContext, path: string): Promise<number> {
  const model = readDescriptorModel(await readDescriptorText(path), path);
  const files = new Map(model.images.map((i) => [i.guid.toLowerCase(), i.file]));
  ctx.out.stdout(`${'PARENT_UUID'.padEnd(38)} C ${'UUID'.padEnd(38)} FNAME\n`);
  for (const shot of model.shots) {
    const current = shot.guid.toLowerCase() === model.topGuid.toLowerCase() ? '*' : ' ';
    ctx.out.stdout(`${shot.parent.padEnd(38)} ${current} ${shot.guid.padEnd(38)} ${files.get(shot.guid.toLowerCase()) ?? ''}\n`);
  }
  return 0;
}

async function mergeStack(ctx: CliContext, path: string, forward: boolean, depth: number): Promise<number> {
  const top = await openImage(path, { readOnly: false });
  let result = top;
  try {
    const job = createPloopMerge({ id: 'ploop-merge', top, direction: forward ? 'forward' : 'backward', depth, descriptor: resolve(path) });
    const ready = new Promise<void>((done) => job.onEvent((e) => (e.event === 'BLOCK_JOB_READY' ? done() : undefined)));
    job.start();
    await Promise.race([ready, job.wait()]);
    if (job.ready) job.complete();
    await job.wait();
    if (job.error !== undefined) {
      reportError(ctx, `Merge of '${path}' failed: ${job.error}`);
      return 1;
    }
    result = job.result ?? top;
    return 0;
  } finally {
    await result.close();
  }
}

export async function ploopCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hFd:',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'forward', hasArg: false, key: 'F' },
      { name: 'depth', hasArg: true, key: 'd' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  let forward = false;
  let depth = 1;
  for (const { key, value = '' } of parsed.options) {
    if (key === 'h') {
      ctx.out.stdout(`${USAGE}\n`);
      return 0;
    }
    if (key === 'F') forward = true;
    if (key === 'd') {
      depth = Number(value);
      if (!Number.isSafeInteger(depth) || depth < 1) return reportUsage(ctx, `Invalid depth '${value}': expected a positive integer`);
    }
  }
  const [action, path, ...extra] = parsed.operands;
  if (action === undefined || path === undefined || extra.length > 0) return reportUsage(ctx, USAGE);
  try {
    switch (action) {
      case 'list':
        return await listStack(ctx, path);
      case 'snapshot': {
        const r = await snapshotStack(path);
        ctx.out.stdout(`Snapshot ${r.snapshotGuid} created; the new top delta is ${r.file}\n`);
        return 0;
      }
      case 'merge':
        return await mergeStack(ctx, path, forward, depth);
      default:
        return reportUsage(ctx, `Unknown ploop action '${action}' (list, snapshot, merge)`);
    }
  } catch (e) {
    reportError(ctx, isVdiskError(e) ? e.message : `'${path}': ${messageOf(e)}`);
    return 1;
  }
}
