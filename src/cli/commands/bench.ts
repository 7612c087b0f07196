/**
 * `vdisk bench`: qemu-img bench (qemu-img.c img_bench/bench_cb, 7.2). `count`
 * requests of `bufsize` bytes, `depth` in flight, starting at `offset` and
 * advancing by `step` (default bufsize) modulo the image size; optionally a
 * flush every N requests, drained first unless --no-drain. Prints the same
 * three lines as qemu-img; the time covers only the request loop.
 */
import type { ImageNode } from '../../block/types.js';
import type { CacheMode, FormatName } from '../../formats/driver.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { parseQemuSize } from '../create-options.js';
import { describeError } from '../errors-text.js';
import { getopt } from '../getopt.js';
import { openErrorText } from '../open-error.js';
import { toFormatName } from './create.js';
import { parseCacheMode } from '../cache-mode.js';

const INT_MAX = 2147483647;

/** The bench parameters, as img_bench's BenchData. */
export interface BenchSettings {
  readonly count: number;
  readonly depth: number;
  readonly bufsize: number;
  readonly step: number;
  readonly offset: number;
  readonly write: boolean;
  readonly pattern: number;
  readonly flushInterval: number;
  readonly drainOnFlush: boolean;
}

/** qemu_strtoul(optarg, NULL, 0, ...): decimal, 0x hex or 0 octal, whole string. */
function strtoul(text: string): number | undefined {
  const t = text.trim();
  let n: number;
  if (/^0[xX][0-9a-fA-F]+$/.test(t)) n = parseInt(t.slice(2), 16);
  else if (/^0[0-7]*$/.test(t)) n = parseInt(t, 8);
  else if (/^[1-9][0-9]*$/.test(t)) n = Number(t);
  else return undefined;
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Runs the request loop of bench_cb on `node`; resolves with the elapsed seconds. */
export async function runBench(node: ImageNode, s: BenchSettings): Promise<number> {
  const imageSize = node.length;
  const buf = new Uint8Array(s.bufsize);
  if (s.write) buf.fill(s.pattern);
  const started = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    let n = s.count;
    let inFlight = 0;
    let offset = s.offset;
    let failed = false;
    const fail = (e: unknown): void => {
      if (failed) return;
      failed = true;
      reject(e);
    };
    const issue = (): void => {
      if (failed) return;
      while (n > inFlight && inFlight < s.depth) {
        const at = offset;
        const p = s.write ? node.write(at, buf) : node.read(at, buf);
        inFlight++;
        offset = imageSize === 0 ? 0 : (offset + s.step) % imageSize;
        p.then(completed, fail);
      }
      if (n === 0) resolve();
    };
    const completed = (): void => {
      const remaining = n - inFlight;
      n--;
      inFlight--;
      if (s.flushInterval > 0 && remaining % s.flushInterval === 0) {
        if (inFlight === 0 || !s.drainOnFlush) {
          if (s.drainOnFlush) {
            node.flush().then(issue, fail);
          } else {
            node.flush().catch(fail);
          }
        }
        if (s.drainOnFlush) {
          if (n === 0 && inFlight === 0) resolve();
          return;
        }
      }
      issue();
    };
    issue();
  });
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/** `vdisk bench [-c count] [-d depth] [-f fmt] [--flush-interval=N] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=P] [-q] [-s size] [-S step] [-t cache] [-U] [-w] filename` */
export async function benchCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hc:d:f:ni:o:qs:S:t:wU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'flush-interval', hasArg: true, key: 'flush-interval' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'pattern', hasArg: true, key: 'pattern' },
      { name: 'no-drain', hasArg: false, key: 'no-drain' },
      { name: 'force-share', hasArg: false, key: 'U' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  let count = 75000;
  let depth = 64;
  let offset = 0;
  let bufsize = 4096;
  let step = 0;
  let pattern = 0;
  let flushInterval = 0;
  let drainOnFlush = true;
  let write = false;
  let forceShare = false;
  let format: string | undefined;
  let cache: CacheMode = 'writeback';
  for (const { key, value = '' } of parsed.options) {
    switch (key) {
      case 'h':
        return reportUsage(ctx, 'bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-U] [-w] filename');
      case 'c':
      case 'd': {
        const v = strtoul(value);
        if (v === undefined || v > INT_MAX) {
          reportError(ctx, key === 'c' ? 'Invalid request count specified' : 'Invalid queue depth specified');
          return 1;
        }
        if (key === 'c') count = v;
        else depth = v;
        break;
      }
      case 'f':
        format = value;
        break;
      case 'n':
        cache = 'none';
        break;
      case 'i':
        if (value !== 'threads' && value !== 'native' && value !== 'io_uring') {
          reportError(ctx, `Invalid aio option: ${value}`);
          return 1;
        }
        break;
      case 'o': {
        const v = parseQemuSize(value);
        if (v === undefined) {
          reportError(ctx, 'Invalid offset specified');
          return 1;
        }
        offset = v;
        break;
      }
      case 's':
      case 'S': {
        const v = parseQemuSize(value);
        if (v === undefined || v > INT_MAX) {
          reportError(ctx, key === 's' ? 'Invalid buffer size specified' : 'Invalid step size specified');
          return 1;
        }
        if (key === 's') bufsize = v;
        else step = v;
        break;
      }
      case 't': {
        const mode = parseCacheMode(value);
        if (mode === undefined) {
          reportError(ctx, 'Invalid cache mode');
          return 1;
        }
        cache = mode;
        break;
      }
      case 'w':
        write = true;
        break;
      case 'U':
        forceShare = true;
        break;
      case 'pattern': {
        const v = strtoul(value);
        if (v === undefined || v > 0xff) {
          reportError(ctx, 'Invalid pattern byte specified');
          return 1;
        }
        pattern = v;
        break;
      }
      case 'flush-interval': {
        const v = strtoul(value);
        if (v === undefined || v > INT_MAX) {
          reportError(ctx, 'Invalid flush interval specified');
          return 1;
        }
        flushInterval = v;
        break;
      }
      case 'no-drain':
        drainOnFlush = false;
        break;
      default:
        break;
    }
  }
  if (parsed.operands.length !== 1) return reportUsage(ctx, 'Expecting one image file name');
  const filename = parsed.operands[parsed.operands.length - 1] ?? '';
  if (!write && flushInterval) {
    reportError(ctx, '--flush-interval is only available in write tests');
    return 1;
  }
  if (flushInterval && flushInterval < depth) {
    reportError(ctx, "Flush interval can't be smaller than depth");
    return 1;
  }
  let fmt: FormatName | undefined;
  if (format !== undefined) {
    fmt = toFormatName(format);
    if (fmt === undefined) {
      reportError(ctx, `Could not open '${filename}': Unknown driver '${format}'`);
      return 1;
    }
  }
  let node: ImageNode;
  try {
    node = await ctx.engine.openImage(filename, { ...(fmt ? { format: fmt } : {}), readOnly: !write, cache, forceShare });
  } catch (e) {
    reportError(ctx, `Could not open '${filename}': ${openErrorText(filename, e)}`);
    return 1;
  }
  const settings: BenchSettings = { count, depth, bufsize, step: step || bufsize, offset, write, pattern, flushInterval, drainOnFlush };
  try {
    ctx.out.stdout(
      `Sending ${count} ${write ? 'write' : 'read'} requests, ${bufsize} bytes each, ${depth} in parallel (starting at offset ${offset}, step size ${settings.step})\n`,
    );
    if (flushInterval) ctx.out.stdout(`Sending flush every ${flushInterval} requests\n`);
    let seconds: number;
    try {
      seconds = await runBench(node, settings);
    } catch (e) {
      reportError(ctx, `Failed request: ${describeError(e)}\n`);
      return 1;
    }
    ctx.out.stdout(`Run completed in ${seconds.toFixed(3)} seconds.\n`);
    return 0;
  } finally {
    await node.close();
  }
}
