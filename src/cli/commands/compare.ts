/**
 * `vdisk compare`: qemu-img compare (qemu-img.c img_compare). Walks both
 * chains by block status; ranges both report as zero are never read; where
 * only one side is allocated, that side must read as zeros. Differences are
 * reported at 512-byte sector granularity, like compare_buffers and
 * find_nonzero. Exit: 0 identical, 1 different, 2 open failure, 3 block status
 * failure, 4 read failure.
 */
import type { ChainExtent, ImageNode } from '../../block/types.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { describeError } from '../errors-text.js';
import { commandProgress, progressModeOption, PROGRESS_LONG_OPTION } from '../command-progress.js';
import { type ProgressMode, type ProgressPrinter } from '../format/progress.js';
import { getopt } from '../getopt.js';
import { openForReading } from './info.js';

const IO_BUF_SIZE = 2 * 1024 * 1024;
const SECTOR = 512;

interface CompareArgs {
  format1: string | undefined;
  format2: string | undefined;
  strict: boolean;
  progress: boolean;
  progressMode: ProgressMode | undefined;
  quiet: boolean;
  forceShare: boolean;
  /** --image-opts: both operands are option strings. */
  imageOpts: boolean;
}

/** A compare outcome that ends the walk: an exit status (after printing). */
class Stop {
  constructor(readonly status: number) {}
}

/** `vdisk compare [-f fmt] [-F fmt] [-T cache] [-p] [-q] [-s] [-U] filename1 filename2` */
export async function compareCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hf:F:T:pqsU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
      PROGRESS_LONG_OPTION,
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const args: CompareArgs = { format1: undefined, format2: undefined, strict: false, progress: false, progressMode: undefined, quiet: false, forceShare: false, imageOpts: false };
  for (const { key, value } of parsed.options) {
    if (key === 'f') args.format1 = value;
    else if (key === 'F') args.format2 = value;
    else if (key === 's') args.strict = true;
    else if (key === 'p') args.progress = true;
    else if (key === 'progress') {
      const mode = progressModeOption(ctx, value);
      if (mode === undefined) return 1;
      args.progressMode = mode;
    }
    else if (key === 'q') args.quiet = true;
    else if (key === 'U') args.forceShare = true;
    else if (key === 'image-opts') args.imageOpts = true;
    else if (key === 'h') return reportUsage(ctx, 'see qemu-img(1) for the compare options');
  }
  if (parsed.operands.length !== 2) return reportUsage(ctx, 'Expecting two image file names');
  const [name1 = '', name2 = ''] = parsed.operands;
  const progress = commandProgress(ctx, { p: args.progress, quiet: args.quiet, mode: args.progressMode }, { phase: 'compare', minStep: 2 });
  try {
    return await compareFiles(ctx, { args, progress, name1, name2 });
  } finally {
    progress.end();
  }
}

async function compareFiles(
  ctx: CliContext,
  job: { readonly args: CompareArgs; readonly progress: ProgressPrinter; readonly name1: string; readonly name2: string },
): Promise<number> {
  const { args, name1, name2 } = job;
  const node1 = await openForReading(ctx, name1, { format: args.format1, forceShare: args.forceShare, imageOpts: args.imageOpts });
  if (!node1) return 2;
  const node2 = await openForReading(ctx, name2, { format: args.format2, forceShare: args.forceShare, imageOpts: args.imageOpts });
  if (!node2) {
    await node1.close().catch(() => undefined);
    return 2;
  }
  try {
    const walker = new CompareWalk(ctx, args, job.progress);
    return await walker.run({ node: node1, name: name1 }, { node: node2, name: name2 });
  } catch (e) {
    if (e instanceof Stop) return e.status;
    throw e;
  } finally {
    await node2.close().catch(() => undefined);
    await node1.close().catch(() => undefined);
  }
}

interface Side {
  readonly node: ImageNode;
  readonly name: string;
}

class CompareWalk {
  readonly #buf1 = new Uint8Array(IO_BUF_SIZE);
  readonly #buf2 = new Uint8Array(IO_BUF_SIZE);

  constructor(
    private readonly ctx: CliContext,
    private readonly args: CompareArgs,
    private readonly progress: ProgressPrinter,
  ) {}

  #print(text: string): void {
    if (!this.args.quiet) this.ctx.out.stdout(text);
  }

  async run(a: Side, b: Side): Promise<number> {
    const size1 = a.node.length;
    const size2 = b.node.length;
    const common = Math.min(size1, size2);
    const progressBase = Math.max(size1, size2);
    this.progress.setTotal(progressBase);
    this.progress.set(0);
    if (this.args.strict && size1 !== size2) {
      this.#print('Strict mode: Image size mismatch!\n');
      return 1;
    }
    for (let offset = 0; offset < common; ) {
      const s1 = await this.#status(a, offset, size1);
      const s2 = await this.#status(b, offset, size2);
      let chunk = Math.min(s1.length, s2.length);
      if (this.args.strict && !sameStatus({ extent: s1, eof: offset + s1.length === size1 }, { extent: s2, eof: offset + s2.length === size2 })) {
        this.#print(`Strict mode: Offset ${offset} block status mismatch!\n`);
        return 1;
      }
      if (s1.zero && s2.zero) {
        // Both read as zeros: nothing to read.
      } else if (s1.present === s2.present) {
        if (s1.present) {
          chunk = Math.min(chunk, IO_BUF_SIZE);
          const buf1 = await this.#read(a, offset, this.#buf1.subarray(0, chunk));
          const buf2 = await this.#read(b, offset, this.#buf2.subarray(0, chunk));
          const at = firstDifferentSector(buf1, buf2);
          if (at >= 0) {
            this.#print(`Content mismatch at offset ${offset + at}!\n`);
            return 1;
          }
        }
      } else {
        chunk = Math.min(chunk, IO_BUF_SIZE);
        await this.#expectZeros(s1.present ? a : b, offset, chunk);
      }
      offset += chunk;
      this.progress.add((chunk / progressBase) * 100);
    }
    if (size1 !== size2) {
      this.#print('Warning: Image size mismatch!\n');
      const over = size1 > size2 ? a : b;
      for (let offset = common; offset < progressBase; ) {
        const s = await this.#status(over, offset, progressBase);
        let chunk = s.length;
        if (s.present && !s.zero) {
          chunk = Math.min(chunk, IO_BUF_SIZE);
          await this.#expectZeros(over, offset, chunk);
        }
        offset += chunk;
        this.progress.add((chunk / progressBase) * 100);
      }
    }
    this.#print('Images are identical.\n');
    return 0;
  }

  async #status(side: Side, offset: number, end: number): Promise<ChainExtent> {
    try {
      const [first] = await side.node.blockStatus(offset, Math.min(end - offset, 2 ** 32));
      if (first && first.length > 0) return first;
    } catch {
      // reported below
    }
    reportError(this.ctx, `Sector allocation test failed for ${side.name}`);
    throw new Stop(3);
  }

  async #read(side: Side, offset: number, buf: Uint8Array): Promise<Uint8Array> {
    try {
      await side.node.read(offset, buf);
      return buf;
    } catch (e) {
      reportError(this.ctx, `Error while reading offset ${offset} of ${side.name}: ${describeError(e)}`);
      throw new Stop(4);
    }
  }

  async #expectZeros(side: Side, offset: number, length: number): Promise<void> {
    const buf = await this.#read(side, offset, this.#buf1.subarray(0, length));
    const at = firstNonZeroSector(buf);
    if (at >= 0) {
      this.#print(`Content mismatch at offset ${offset + at}!\n`);
      throw new Stop(1);
    }
  }
}

/**
 * -s compares QEMU's block status words: the allocated, zero and data flags,
 * whether an offset is valid, and BDRV_BLOCK_EOF (the extent reaches the end of the image).
 */
function sameStatus(a: { extent: ChainExtent; eof: boolean }, b: { extent: ChainExtent; eof: boolean }): boolean {
  const x = a.extent;
  const y = b.extent;
  return (
    x.present === y.present && x.zero === y.zero && x.data === y.data && (x.hostOffset === undefined) === (y.hostOffset === undefined) && a.eof === b.eof
  );
}

/** Offset of the first 512-byte sector where the buffers differ, or -1. */
export function firstDifferentSector(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i += SECTOR) {
    const end = Math.min(a.length, i + SECTOR);
    for (let j = i; j < end; j++) if (a[j] !== b[j]) return i;
  }
  return -1;
}

/** Offset of the first 512-byte sector holding a non-zero byte, or -1. */
export function firstNonZeroSector(buf: Uint8Array): number {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return i - (i % SECTOR);
  return -1;
}
