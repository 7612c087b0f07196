/**
 * qemu-io's commands that change which image the session works on: open,
 * close, reopen and abort (qemu-io.c / qemu-io-cmds.c). Their texts are
 * qemu-io 7.2's.
 */
import { parseCacheMode } from '../cache-mode.js';
import { PROGRAM } from '../context.js';
import { getopt } from '../getopt.js';
import { toFormatName } from '../commands/create.js'; // the CLI's one map from qemu's format names
import type { CacheMode } from '../../formats/driver.js';
import type { IoFile, OpenSettings } from './open-file.js';
import type { CliOutput } from '../context.js';
import type { CommandResult } from './session.js';

/** A command that works with or without an open image. */
export interface FileCommand {
  readonly name: string;
  readonly argmin: number;
  readonly argmax: number;
  readonly args?: string;
  readonly oneline: string;
  readonly help?: string;
  run(file: IoFile, out: CliOutput, argv: readonly string[]): Promise<CommandResult | 'abort'>;
}

const OPEN_HELP = `
 opens a new file in the requested mode

 Example:
 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached

 Opens a file for subsequent use by all of the other qemu-io commands.
 -r, -- open file read-only
 -s, -- use snapshot file
 -C, -- use copy-on-read
 -n, -- disable host cache, short for -t none
 -U, -- force shared permissions
 -k, -- use kernel AIO implementation (Linux only, prefer use of -i)
 -i, -- use AIO mode (threads, native or io_uring)
 -t, -- use the given cache mode for the image
 -d, -- use the given discard mode for the image
 -o, -- options to be given to the block driver
`;

const REOPEN_HELP = `
 Changes the open options of an already opened image

 Example:
 'reopen -o lazy-refcounts=on' - activates lazy refcount writeback on a qcow2 image

 -r, -- Reopen the image read-only
 -w, -- Reopen the image read-write
 -c, -- Change the cache mode to the given value
 -o, -- Changes block driver options (cf. 'open' command)

`;

function usage(out: CliOutput, cmd: FileCommand): CommandResult {
  out.stdout(`${cmd.name} ${cmd.args ?? ''} -- ${cmd.oneline}\n`);
  return 'failed';
}

/** glibc getopt's complaint, then the command's usage line (qemu-io prints both). */
function badOption(out: CliOutput, cmd: FileCommand, message: string): CommandResult {
  const letter = /'-{1,2}([^']*)'/.exec(message)?.[1] ?? '';
  out.stderr(`${cmd.name}: invalid option -- '${letter.slice(0, 1)}'\n`);
  return usage(out, cmd);
}

function report(out: CliOutput, message: string): CommandResult {
  out.stderr(`${PROGRAM}: ${message}\n`);
  return 'failed';
}

/** The -o list: driver= picks the format; other keys are driver options vdisk does not take. */
function driverOptions(text: readonly string[]): { format: string | undefined; unknown: string | undefined } {
  let format: string | undefined;
  let unknown: string | undefined;
  for (const item of text.flatMap((t) => t.split(','))) {
    if (item === '') continue;
    const eq = item.indexOf('=');
    const key = eq < 0 ? item : item.slice(0, eq);
    if (key === 'driver') format = item.slice(eq + 1);
    else unknown ??= key;
  }
  return { format, unknown };
}

export const openCmd: FileCommand = {
  name: 'open',
  argmin: 1,
  argmax: -1,
  args: '[-rsCnkU] [-t cache] [-d discard] [-o options] [path]',
  oneline: 'open the file specified by path',
  help: OPEN_HELP,
  async run(file, out, argv) {
    const p = getopt(argv, { shortOptions: 'snCro:kt:d:i:U', stopAtOperand: true });
    if (!p.ok) return badOption(out, openCmd, p.message);
    let readOnly = false;
    let forceShare = false;
    let cache: CacheMode | undefined;
    const driverText: string[] = [];
    for (const { key, value = '' } of p.options) {
      if (key === 'r') readOnly = true;
      else if (key === 'U') forceShare = true;
      else if (key === 'n') cache = 'none';
      else if (key === 'o') driverText.push(value);
      else if (key === 's') return report(out, "can't open: snapshot mode (-s) is not supported by vdisk");
      else if (key === 't') {
        cache = parseCacheMode(value);
        if (cache === undefined) return report(out, `Invalid cache option: ${value}`);
      } else if (key === 'd' && !['ignore', 'off', 'unmap', 'on'].includes(value)) return report(out, `Invalid discard option: ${value}`);
      else if (key === 'i' && !['threads', 'native', 'io_uring'].includes(value)) return report(out, `Invalid aio option: ${value}`);
      // -C (copy-on-read) and -k (kernel AIO) change how QEMU does I/O, not what it reads.
    }
    if (p.operands.length !== 1) return usage(out, openCmd);
    const filename = p.operands[0] ?? '';
    const { format: formatText, unknown } = driverOptions(driverText);
    const format = formatText === undefined ? undefined : toFormatName(formatText);
    if (formatText !== undefined && format === undefined) return report(out, `can't open device ${filename}: Unknown driver '${formatText}'`);
    if (unknown !== undefined) return report(out, `can't open device ${filename}: Block format '${format ?? 'raw'}' does not support the option '${unknown}'`);
    const settings: OpenSettings = { filename, format, readOnly, forceShare, cache };
    return (await file.open(settings)) ? 'ok' : 'failed';
  },
};

export const closeCmd: FileCommand = {
  name: 'close',
  argmin: 0,
  argmax: 0,
  oneline: 'close the current open file',
  async run(file, out) {
    if (!file.session) return noFile(out);
    await file.close();
    return 'ok';
  },
};

export const reopenCmd: FileCommand = {
  name: 'reopen',
  argmin: 0,
  argmax: -1,
  args: '[(-r|-w)] [-c cache] [-o options]',
  oneline: 'reopens an image with new options',
  help: REOPEN_HELP,
  async run(file, out, argv) {
    const old = file.settings;
    if (!file.session || !old) return noFile(out);
    const p = getopt(argv, { shortOptions: 'c:o:rw', stopAtOperand: true });
    if (!p.ok) return badOption(out, reopenCmd, p.message);
    let readOnly: boolean | undefined;
    let cache = old.cache;
    for (const { key, value = '' } of p.options) {
      if (key === 'r' || key === 'w') {
        if (readOnly !== undefined) return report(out, 'Only one -r/-w option may be given');
        readOnly = key === 'r';
      } else if (key === 'c') {
        cache = parseCacheMode(value);
        if (cache === undefined) return report(out, `Invalid cache option: ${value}`);
      }
      // -o: vdisk's drivers take no runtime options (lazy-refcounts and the like are accepted and kept as they are).
    }
    if (p.operands.length > 0) return usage(out, reopenCmd);
    // A reopen is a close and an open with the new settings; when that fails the old ones are restored.
    await file.close();
    if (await file.open({ ...old, readOnly: readOnly ?? old.readOnly, cache })) return 'ok';
    await file.open(old);
    return 'failed';
  },
};

export const abortCmd: FileCommand = {
  name: 'abort',
  argmin: 0,
  argmax: 0,
  oneline: 'simulate a program crash using abort(3)',
  async run(file) {
    file.drop();
    return 'abort';
  },
};

export function noFile(out: CliOutput): CommandResult {
  out.stderr("no file open, try 'help open'\n");
  return 'failed';
}

export const FILE_COMMANDS: readonly FileCommand[] = [openCmd, closeCmd, reopenCmd, abortCmd];
