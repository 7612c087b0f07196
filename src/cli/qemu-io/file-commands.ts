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
import { parseDriverOptions, unsupportedOption } from './driver-options.js';

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

/** glibc getopt's complaint on stderr, then the command's usage line (qemu-io prints both). */
function badOption(out: CliOutput, cmd: FileCommand, failure: { readonly shortDiagnostic?: string }): CommandResult {
  if (failure.shortDiagnostic !== undefined) out.stderr(`${cmd.name}: ${failure.shortDiagnostic}\n`);
  return usage(out, cmd);
}

function report(out: CliOutput, message: string): CommandResult {
  out.stderr(`${PROGRAM}: ${message}\n`);
  return 'failed';
}

const DISCARD_MODES: readonly string[] = ['ignore', 'off', 'unmap', 'on'];
const AIO_MODES: readonly string[] = ['threads', 'native', 'io_uring'];

export const openCmd: FileCommand = {
  name: 'open',
  argmin: 1,
  argmax: -1,
  args: '[-rsCnkU] [-t cache] [-d discard] [-o options] [path]',
  oneline: 'open the file specified by path',
  help: OPEN_HELP,
  async run(file, out, argv) {
    const p = getopt(argv, { shortOptions: 'snCro:kt:d:i:U' });
    let readOnly = false;
    let forceShare = false;
    let snapshot = false;
    let nativeAio = false;
    let copyOnRead = false;
    let cache: CacheMode | undefined;
    const driverText: string[] = [];
    for (const { key, value = '' } of p.options) {
      if (key === 'r') readOnly = true;
      else if (key === 'U') forceShare = true;
      else if (key === 's') snapshot = true;
      else if (key === 'n') cache = 'none';
      else if (key === 'k') nativeAio = true;
      else if (key === 'C') copyOnRead = true;
      else if (key === 'o') driverText.push(value);
      else if (key === 't') {
        cache = parseCacheMode(value);
        if (cache === undefined) return report(out, `Invalid cache option: ${value}`);
      } else if (key === 'd') {
        if (!DISCARD_MODES.includes(value)) return report(out, `Invalid discard option: ${value}`);
      } else if (key === 'i') {
        if (!AIO_MODES.includes(value)) return report(out, `Invalid aio option: ${value}`);
        nativeAio = value === 'native';
      }
    }
    if (!p.ok) return badOption(out, openCmd, p);
    if (p.operands.length !== 1) return usage(out, openCmd);
    const filename = p.operands[0] ?? '';
    const common = { readOnly, forceShare, cache, snapshot, nativeAio, copyOnRead };
    if (file.imageOpts) {
      if (driverText.length > 0) {
        out.stdout("--image-opts and 'open -o' are mutually exclusive\n");
        return 'failed';
      }
      return (await file.openOptionString(filename, common)) ? 'ok' : 'failed';
    }
    const options = parseDriverOptions(driverText);
    for (const w of options.warnings) out.stderr(`${PROGRAM}: ${w}\n`);
    const formatText = options.values.get('driver');
    const format = formatText === undefined ? undefined : toFormatName(formatText);
    if (formatText !== undefined && format === undefined) return report(out, `can't open device ${filename}: Unknown driver '${formatText}'`);
    const settings: OpenSettings = { ...common, filename, format, options };
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
    let readOnly: boolean | undefined;
    let cache = old.cache;
    let changesOptions = false;
    const driverText: string[] = [];
    for (const { key, value = '' } of p.options) {
      if (key === 'r' || key === 'w') {
        if (readOnly !== undefined) return report(out, 'Only one -r/-w option may be given');
        readOnly = key === 'r';
      } else if (key === 'c') {
        cache = parseCacheMode(value);
        if (cache === undefined) return report(out, `Invalid cache option: ${value}`);
        changesOptions = true;
      } else if (key === 'o') {
        driverText.push(value);
        changesOptions = true;
      }
    }
    if (!p.ok) return badOption(out, reopenCmd, p);
    if (p.operands.length > 0) return usage(out, reopenCmd);
    // -o: the format's runtime options are accepted (vdisk's drivers keep working as they do); others cannot change.
    const options = parseDriverOptions(driverText);
    for (const w of options.warnings) out.stderr(`${PROGRAM}: ${w}\n`);
    const format = file.session.node.format;
    for (const [key, value] of options.values) {
      const other = key === 'driver' ? toFormatName(value) !== format : unsupportedOption({ values: new Map([[key, value]]), warnings: [] }, format) !== undefined;
      if (other) {
        return report(out, `Cannot change the option '${key}'`);
      }
    }
    const overlay = file.snapshotOverlay;
    if (overlay !== undefined) {
      // QEMU reopens a -s overlay by its name, which is gone: only a first reopen that changes nothing succeeds
      // (it leaves the overlay needing its file reopened by the next one).
      if (!changesOptions && (readOnly ?? old.readOnly) === old.readOnly && !file.snapshotReopened) {
        file.snapshotReopened = true;
        return 'ok';
      }
      return report(out, `Could not open '${overlay}': No such file or directory`);
    }
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
