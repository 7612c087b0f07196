import { createInterface } from 'node:readline';
import type { CacheMode } from '../../formats/driver.js';
import { type CliContext, PROGRAM, reportError, reportUsage } from '../context.js';
import { getopt } from '../getopt.js';
import { runCommandLine } from '../qemu-io/run-line.js';
import { IoFile } from '../qemu-io/open-file.js';
import { toFormatName } from './create.js';
import { parseCacheMode } from '../cache-mode.js';


/** qemu-io's prompt, "progname> ". */
const PROMPT = `${PROGRAM}> `;

async function* stdinLines(): AsyncGenerator<string> {
  const rl = createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) yield line;
}

/** `vdisk io [-f fmt] [-c cmd]... [-r] [-s] [-n|-t cache] [-i aio|-k] [-d discard] [-U] [-q] filename` — qemu-io. */
export async function ioCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'hVc:d:f:rsnCmki:t:T:qU',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'version', hasArg: false, key: 'V' },
      { name: 'cmd', hasArg: true, key: 'c' },
      { name: 'format', hasArg: true, key: 'f' },
      { name: 'read-only', hasArg: false, key: 'r' },
      { name: 'snapshot', hasArg: false, key: 's' },
      { name: 'nocache', hasArg: false, key: 'n' },
      { name: 'copy-on-read', hasArg: false, key: 'C' },
      { name: 'misalign', hasArg: false, key: 'm' },
      { name: 'native-aio', hasArg: false, key: 'k' },
      { name: 'discard', hasArg: true, key: 'd' },
      { name: 'aio', hasArg: true, key: 'i' },
      { name: 'cache', hasArg: true, key: 't' },
      { name: 'trace', hasArg: true, key: 'T' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force-share', hasArg: false, key: 'U' },
      { name: 'quiet', hasArg: false, key: 'q' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const commands: string[] = [];
  let format: string | undefined;
  let readOnly = false;
  let forceShare = false;
  let quiet = false;
  let snapshot = false;
  let nativeAio = false;
  let cache: CacheMode | undefined;
  for (const { key, value = '' } of parsed.options) {
    if (key === 'c') commands.push(value);
    else if (key === 'f') format = value;
    else if (key === 'r') readOnly = true;
    else if (key === 'U') forceShare = true;
    else if (key === 'q') quiet = true;
    else if (key === 's') snapshot = true;
    else if (key === 'k') nativeAio = true;
    else if (key === 'n') cache = 'none';
    else if (key === 't') {
      const mode = parseCacheMode(value);
      if (mode === undefined) {
        reportError(ctx, `Invalid cache option: ${value}`);
        return 1;
      }
      cache = mode;
    } else if (key === 'i') {
      if (!['threads', 'native', 'io_uring'].includes(value)) {
        reportError(ctx, `Invalid aio option: ${value}`);
        return 1;
      }
      nativeAio = value === 'native';
    } else if (key === 'd' && !['ignore', 'off', 'unmap', 'on'].includes(value)) {
      reportError(ctx, `Invalid discard option: ${value}`);
      return 1;
    } else if (key === 'V') {
      ctx.out.stdout(`${PROGRAM} io version 0.1.0 (qemu-io 7.2 compatible)\n`);
      return 0;
    } else if (key === 'h') {
      ctx.out.stdout(`Usage: ${PROGRAM} io [OPTIONS]... [-c STRING]... [file]\n`);
      return 0;
    }
  }
  if (parsed.operands.length > 1) return reportUsage(ctx, `Unexpected argument: ${parsed.operands[1] ?? ''}`);
  const filename = parsed.operands[0];
  const fmt = format === undefined ? undefined : toFormatName(format);
  if (format !== undefined && fmt === undefined) {
    reportError(ctx, `can't open device ${filename ?? ''}: Unknown driver '${format}'`);
    return 1;
  }
  const file = new IoFile(ctx, quiet);
  if (filename !== undefined && !(await file.open({ filename, format: fmt, readOnly, forceShare, cache, snapshot, nativeAio }))) return 1;
  let failed = false;
  let aborted = false;
  try {
    // Without -c, commands come from stdin and qemu-io prompts before each one (on stdout, tty or not).
    const interactive = commands.length === 0;
    const lines: AsyncIterable<string> | Iterable<string> = interactive ? (ctx.stdinLines ?? stdinLines)() : commands;
    if (interactive) ctx.out.stdout(PROMPT);
    for await (const line of lines) {
      const outcome = await runCommandLine(file, ctx.out, line);
      if (outcome.result === 'failed') failed = true;
      aborted = outcome.aborted === true;
      if (outcome.quit) break;
      if (interactive) ctx.out.stdout(PROMPT);
    }
  } catch (e) {
    reportError(ctx, e instanceof Error ? e.message : String(e));
    failed = true;
  } finally {
    try {
      await file.close();
    } catch (e) {
      reportError(ctx, e instanceof Error ? e.message : String(e));
      failed = true;
    }
  }
  // abort(3) ends qemu-io with SIGABRT: the shell sees 128 + 6.
  if (aborted) return 134;
  return failed ? 1 : 0;
}
