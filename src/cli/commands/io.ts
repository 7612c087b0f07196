import { createInterface } from 'node:readline';
import type { CacheMode } from '../../formats/driver.js';
import { type CliContext, PROGRAM, reportError } from '../context.js';
import { getopt, type LongOption } from '../getopt.js';
import { runCommandLine } from '../qemu-io/run-line.js';
import { IoFile } from '../qemu-io/open-file.js';
import { toFormatName } from './create.js';
import { parseCacheMode } from '../cache-mode.js';

const IO_LONG_OPTIONS: readonly LongOption[] = [
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
];

/** What glibc's getopt_long prints for a bad option of qemu-io's own command line (after "progname: "). */
function glibcComplaint(failure: { readonly message: string; readonly shortDiagnostic?: string }, argv: readonly string[]): string {
  if (failure.shortDiagnostic !== undefined) return failure.shortDiagnostic;
  const missing = /^missing argument for option '(.*)'$/.exec(failure.message);
  if (missing) return `option '${missing[1] ?? ''}' requires an argument`;
  const ambiguous = /^option '--([^=']*)[^']*' is ambiguous$/.exec(failure.message);
  if (ambiguous) {
    const prefix = ambiguous[1] ?? '';
    const given = argv.find((a) => a.startsWith(`--${prefix}`)) ?? `--${prefix}`;
    const names = IO_LONG_OPTIONS.filter((o) => o.name.startsWith(prefix)).map((o) => `'--${o.name}'`);
    return `option '${given.split('=')[0] ?? given}' is ambiguous; possibilities: ${names.join(' ')}`;
  }
  return failure.message;
}

/** qemu-io's --help, with vdisk's name where it names itself. */
const IO_USAGE = `Usage: ${PROGRAM} io [OPTIONS]... [-c STRING]... [file]
QEMU Disk exerciser

  --object OBJECTDEF   define an object such as 'secret' for
                       passwords and/or encryption keys
  --image-opts         treat file as option string
  -c, --cmd STRING     execute command with its arguments
                       from the given string
  -f, --format FMT     specifies the block driver to use
  -r, --read-only      export read-only
  -s, --snapshot       use snapshot file
  -n, --nocache        disable host cache, short for -t none
  -C, --copy-on-read   enable copy-on-read
  -m, --misalign       misalign allocations for O_DIRECT
  -k, --native-aio     use kernel AIO implementation
                       (Linux only, prefer use of -i)
  -i, --aio=MODE       use AIO mode (threads, native or io_uring)
  -t, --cache=MODE     use the given cache mode for the image
  -d, --discard=MODE   use the given discard mode for the image
  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]
                       specify tracing options
                       see qemu-img(1) man page for full description
  -U, --force-share    force shared permissions
  -h, --help           display this help and exit
  -V, --version        output version information and exit

See '${PROGRAM} io -c help' for information on available commands.
`;

/** qemu-io's prompt, "progname> ". */
const PROMPT = `${PROGRAM}> `;

async function* stdinLines(): AsyncGenerator<string> {
  const rl = createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) yield line;
}

/** `vdisk io [-f fmt] [-c cmd]... [-r] [-s] [-n|-t cache] [-i aio|-k] [-d discard] [-U] [-q] filename` — qemu-io. */
export async function ioCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, { shortOptions: 'hVc:d:f:rsnCmki:t:T:U', longOptions: IO_LONG_OPTIONS });
  if (!parsed.ok) {
    ctx.out.stderr(`${PROGRAM}: ${glibcComplaint(parsed, argv)}\n`);
    ctx.out.stdout(IO_USAGE);
    return 1;
  }

  const commands: string[] = [];
  let format: string | undefined;
  let readOnly = false;
  let forceShare = false;
  let snapshot = false;
  let nativeAio = false;
  let copyOnRead = false;
  let imageOpts = false;
  let cache: CacheMode | undefined;
  for (const { key, value = '' } of parsed.options) {
    if (key === 'c') commands.push(value);
    else if (key === 'f') format = value;
    else if (key === 'r') readOnly = true;
    else if (key === 'U') forceShare = true;
    else if (key === 's') snapshot = true;
    else if (key === 'k') nativeAio = true;
    else if (key === 'C') copyOnRead = true;
    else if (key === 'image-opts') imageOpts = true;
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
      ctx.out.stdout(IO_USAGE);
      return 0;
    }
  }
  // More than one file: qemu-io prints its help and fails.
  if (parsed.operands.length > 1) {
    ctx.out.stdout(IO_USAGE);
    return 1;
  }
  const operand = parsed.operands[0];
  if (imageOpts && format !== undefined) {
    reportError(ctx, '--image-opts and -f are mutually exclusive');
    return 1;
  }
  // qemu-io 7.2 has no -q: the probed-raw warning is always printed.
  const file = new IoFile(ctx, false, imageOpts);
  const common = { readOnly, forceShare, cache, snapshot, nativeAio, copyOnRead };
  if (operand !== undefined && imageOpts) {
    if (!(await file.openOptionString(operand, common))) return 1;
  } else if (operand !== undefined) {
    const fmt = format === undefined ? undefined : toFormatName(format);
    if (format !== undefined && fmt === undefined) {
      reportError(ctx, `can't open device ${operand}: Unknown driver '${format}'`);
      return 1;
    }
    if (!(await file.open({ ...common, filename: operand, format: fmt }))) return 1;
  }
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
