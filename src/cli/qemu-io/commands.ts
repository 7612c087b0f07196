import { getopt } from '../getopt.js';
import { ioFailureText } from '../errors-text.js';
import { ioSizeText } from '../format/size-text.js';
import { qemuHumanDump } from '../format/qemu-json.js';
import { orderedSpecific } from '../image-info.js';
import { REQUEST_MAX_BYTES, cvtnum, cvtnumErrorText, parsePattern } from './numbers.js';
import { hexDump, reportText } from './report.js';
import type { CommandResult, IoCommand, IoSession } from './session.js';

/** qemuio_command_usage: the synopsis on stdout, and a failure. */
function usage(s: IoSession, cmd: IoCommand): CommandResult {
  s.out.stdout(`${cmd.name} ${cmd.args} -- ${cmd.oneline}\n`);
  return 'failed';
}

function now(): bigint {
  return process.hrtime.bigint();
}

function seconds(start: bigint): number {
  return Number(now() - start) / 1e9;
}

/** Parses a number operand, printing qemu-io's parse error. */
function num(s: IoSession, text: string | undefined): number | undefined {
  const n = cvtnum(text ?? '');
  if (typeof n === 'number') return n;
  s.out.stdout(cvtnumErrorText(n, text ?? ''));
  return undefined;
}

function pattern(s: IoSession, text: string): number | undefined {
  const p = parsePattern(text);
  if (p === undefined) s.out.stdout(`${text} is not a valid pattern byte\n`);
  return p;
}

/** Checks a request against the disk before any buffer is allocated for it. */
function inRange(s: IoSession, offset: number, count: number): boolean {
  return offset + count <= s.node.length;
}

const READ_HELP = `
 reads a range of bytes from the given offset

 Example:
 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file

 Reads a segment of the currently open file, optionally dumping it to the
 standard output stream (with -v option) for subsequent inspection.
 -b, -- read from the VM state rather than the virtual disk
 -C, -- report statistics in a machine parsable format
 -l, -- length for pattern verification (only with -P)
 -p, -- ignored for backwards compatibility
 -P, -- use a pattern to verify read data
 -q, -- quiet mode, do not show I/O statistics
 -s, -- start offset for pattern verification (only with -P)
 -v, -- dump buffer to standard output

`;

const readCmd: IoCommand = {
  name: 'read',
  altname: 'r',
  argmin: 2,
  argmax: -1,
  args: '[-abCqv] [-P pattern [-s off] [-l len]] off len',
  oneline: 'reads a number of bytes at a specified offset',
  help: READ_HELP,
  async run(s, argv) {
    const p = getopt(argv, { shortOptions: 'abCl:pP:qs:v' });
    if (!p.ok) return usage(s, readCmd);
    let machine = false, quiet = false, verbose = false;
    let pat: number | undefined;
    let patOffset: number | undefined;
    let patCount: number | undefined;
    for (const { key, value = '' } of p.options) {
      if (key === 'C') machine = true;
      else if (key === 'q') quiet = true;
      else if (key === 'v') verbose = true;
      else if (key === 'P') {
        pat = pattern(s, value);
        if (pat === undefined) return 'failed';
      } else if (key === 's' || key === 'l') {
        const n = num(s, value);
        if (n === undefined) return 'failed';
        if (key === 's') patOffset = n;
        else patCount = n;
      } else if (key === 'b') {
        s.out.stdout('read failed: Operation not supported\n');
        return 'failed';
      }
    }
    if (p.operands.length !== 2) return usage(s, readCmd);
    const offset = num(s, p.operands[0]);
    if (offset === undefined) return 'failed';
    const count = num(s, p.operands[1]);
    if (count === undefined) return 'failed';
    if (count > REQUEST_MAX_BYTES) {
      s.out.stdout(`length cannot exceed ${REQUEST_MAX_BYTES}, given ${p.operands[1] ?? ''}\n`);
      return 'failed';
    }
    if (pat === undefined && (patOffset !== undefined || patCount !== undefined)) return usage(s, readCmd);
    const pOff = patOffset ?? 0;
    const pCount = patCount ?? count - pOff;
    if (pCount < 0 || pCount + pOff > count) {
      s.out.stdout('pattern verification range exceeds end of read data\n');
      return 'failed';
    }
    if (!inRange(s, offset, count)) {
      s.out.stdout(`read failed: ${ioFailureText(undefined)}\n`);
      return 'failed';
    }
    const buf = new Uint8Array(count).fill(0xab);
    const t0 = now();
    try {
      await s.node.read(offset, buf);
    } catch (e) {
      s.out.stdout(`read failed: ${ioFailureText(e)}\n`);
      return 'failed';
    }
    const elapsed = seconds(t0);
    let result: CommandResult = 'ok';
    if (pat !== undefined) {
      const region = buf.subarray(pOff, pOff + pCount);
      if (region.some((b) => b !== pat)) {
        s.out.stdout(`Pattern verification failed at offset ${offset + pOff}, ${pCount} bytes\n`);
        result = 'failed';
      }
    }
    if (quiet) return result;
    if (verbose) s.out.stdout(hexDump(buf, offset));
    s.out.stdout(reportText({ op: 'read', seconds: elapsed, offset, count, total: count, ops: 1, machine }));
    return result;
  },
};

const WRITE_HELP = `
 writes a range of bytes from the given offset

 Example:
 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file

 Writes into a segment of the currently open file, using a buffer
 filled with a set pattern (0xcdcdcdcd).
 -b, -- write to the VM state rather than the virtual disk
 -c, -- write compressed data with blk_write_compressed
 -f, -- use Force Unit Access semantics
 -n, -- with -z, don't allow slow fallback
 -p, -- ignored for backwards compatibility
 -P, -- use different pattern to fill file
 -s, -- use a pattern file to fill the write buffer
 -C, -- report statistics in a machine parsable format
 -q, -- quiet mode, do not show I/O statistics
 -u, -- with -z, allow unmapping
 -z, -- write zeroes using blk_co_pwrite_zeroes

`;

const writeCmd: IoCommand = {
  name: 'write',
  altname: 'w',
  argmin: 2,
  argmax: -1,
  args: '[-bcCfnquz] [-P pattern | -s source_file] off len',
  oneline: 'writes a number of bytes at a specified offset',
  help: WRITE_HELP,
  writes: true,
  async run(s, argv) {
    const p = getopt(argv, { shortOptions: 'bcCfnpP:qs:uz' });
    if (!p.ok) return usage(s, writeCmd);
    let machine = false, quiet = false, compressed = false, zero = false, fua = false, noFallback = false, unmap = false;
    let pat = 0xcd;
    let patGiven = false;
    for (const { key, value = '' } of p.options) {
      if (key === 'C') machine = true;
      else if (key === 'q') quiet = true;
      else if (key === 'c') compressed = true;
      else if (key === 'z') zero = true;
      else if (key === 'f') fua = true;
      else if (key === 'n') noFallback = true;
      else if (key === 'u') unmap = true;
      else if (key === 'P') {
        const v = pattern(s, value);
        if (v === undefined) return 'failed';
        pat = v;
        patGiven = true;
      } else if (key === 'b' || key === 's') {
        s.out.stdout('write failed: Operation not supported\n');
        return 'failed';
      }
    }
    if (p.operands.length !== 2) return usage(s, writeCmd);
    if (fua && compressed) {
      s.out.stdout('-f and -b or -c cannot be specified at the same time\n');
      return 'failed';
    }
    if (noFallback && !zero) {
      s.out.stdout('-n requires -z to be specified\n');
      return 'failed';
    }
    if (unmap && !zero) {
      s.out.stdout('-u requires -z to be specified\n');
      return 'failed';
    }
    if (zero && patGiven) {
      s.out.stdout('Only one of -z, -P, and -s can be specified at the same time\n');
      return 'failed';
    }
    const offset = num(s, p.operands[0]);
    if (offset === undefined) return 'failed';
    const count = num(s, p.operands[1]);
    if (count === undefined) return 'failed';
    if (count > REQUEST_MAX_BYTES && !zero) {
      s.out.stdout(`length cannot exceed ${REQUEST_MAX_BYTES}, given ${p.operands[1] ?? ''}\n`);
      return 'failed';
    }
    if (!inRange(s, offset, count)) {
      s.out.stdout(`write failed: ${ioFailureText(undefined)}\n`);
      return 'failed';
    }
    const t0 = now();
    try {
      if (zero) await s.node.writeZeroes(offset, count, { mayUnmap: unmap, fua, fastZero: noFallback });
      else {
        const buf = new Uint8Array(count).fill(pat);
        if (compressed) await s.node.writeCompressed(offset, buf);
        else await s.node.write(offset, buf, { fua });
      }
    } catch (e) {
      s.out.stdout(`write failed: ${ioFailureText(e)}\n`);
      return 'failed';
    }
    const elapsed = seconds(t0);
    if (!quiet) s.out.stdout(reportText({ op: 'wrote', seconds: elapsed, offset, count, total: count, ops: 1, machine }));
    return 'ok';
  },
};

/** readv/writev/aio_read/aio_write: an offset and several lengths, done as one request. */
function vectored(opts: { name: string; altname?: string; write: boolean; aio: boolean; args: string; oneline: string; optstring: string }): IoCommand {
  const cmd: IoCommand = {
    name: opts.name,
    ...(opts.altname ? { altname: opts.altname } : {}),
    argmin: 2,
    argmax: -1,
    args: opts.args,
    oneline: opts.oneline,
    writes: opts.write,
    async run(s, argv) {
      const p = getopt(argv, { shortOptions: opts.optstring });
      if (!p.ok) return usage(s, cmd);
      let machine = false, quiet = false, verbose = false, fua = false, zero = false, unmap = false;
      let pat: number | undefined;
      for (const { key, value = '' } of p.options) {
        if (key === 'C') machine = true;
        else if (key === 'q') quiet = true;
        else if (key === 'v') verbose = true;
        else if (key === 'f') fua = true;
        else if (key === 'z') zero = true;
        else if (key === 'u') unmap = true;
        else if (key === 'P') {
          pat = pattern(s, value);
          if (pat === undefined) return 'failed';
        }
      }
      if (p.operands.length < 2) return usage(s, cmd);
      const offset = num(s, p.operands[0]);
      if (offset === undefined) return 'failed';
      let count = 0;
      for (const text of p.operands.slice(1)) {
        const n = num(s, text);
        if (n === undefined) return 'failed';
        if (n > REQUEST_MAX_BYTES) {
          s.out.stdout(`Argument '${text}' exceeds maximum size ${REQUEST_MAX_BYTES}\n`);
          return 'failed';
        }
        count += n;
        if (count > REQUEST_MAX_BYTES) {
          s.out.stdout(`The total number of bytes exceed the maximum size ${REQUEST_MAX_BYTES}\n`);
          return 'failed';
        }
      }
      const failWord = `${opts.name.replace('aio_', '')} failed`;
      const failed = (e: unknown): CommandResult => {
        s.out.stdout(opts.aio ? `${opts.name} failed: ${ioFailureText(e)}\n` : `${failWord}: ${ioFailureText(e)}\n`);
        return 'failed';
      };
      if (!inRange(s, offset, count)) return failed(undefined);
      const t0 = now();
      let buf: Uint8Array | undefined;
      try {
        if (opts.write) {
          if (zero) await s.node.writeZeroes(offset, count, { mayUnmap: unmap, fua });
          else await s.node.write(offset, new Uint8Array(count).fill(pat ?? 0xcd), { fua });
        } else {
          buf = new Uint8Array(count).fill(0xab);
          await s.node.read(offset, buf);
        }
      } catch (e) {
        return failed(e);
      }
      const elapsed = seconds(t0);
      let result: CommandResult = 'ok';
      if (buf && pat !== undefined && buf.some((b) => b !== pat)) {
        s.out.stdout(`Pattern verification failed at offset ${offset}, ${count} bytes\n`);
        result = 'failed';
      }
      if (quiet) return result;
      if (buf && verbose) s.out.stdout(hexDump(buf, offset));
      s.out.stdout(reportText({ op: opts.write ? 'wrote' : 'read', seconds: elapsed, offset, count, total: count, ops: 1, machine }));
      return result;
    },
  };
  return cmd;
}

const readvCmd = vectored({ name: 'readv', write: false, aio: false, args: '[-Cqv] [-P pattern] off len [len..]', oneline: 'reads a number of bytes at a specified offset', optstring: 'CP:qv' });
const writevCmd = vectored({ name: 'writev', write: true, aio: false, args: '[-Cfq] [-P pattern] off len [len..]', oneline: 'writes a number of bytes at a specified offset', optstring: 'CfqP:' });
const aioReadCmd = vectored({ name: 'aio_read', write: false, aio: true, args: '[-Cqv] [-P pattern] [-i] off len [len..]', oneline: 'asynchronously reads a number of bytes', optstring: 'CP:qvi' });
const aioWriteCmd = vectored({ name: 'aio_write', write: true, aio: true, args: '[-Cfiquz] [-P pattern] off len [len..]', oneline: 'asynchronously writes a number of bytes', optstring: 'CfiqP:uz' });

function simple(name: string, oneline: string, run: (s: IoSession) => Promise<CommandResult>, extra: Partial<IoCommand> = {}): IoCommand {
  return { name, argmin: 0, argmax: 0, args: '', oneline, run: (s) => run(s), ...extra };
}

const flushCmd = simple('flush', 'flush all in-core file state to disk', async (s) => {
  await s.node.flush();
  return 'ok';
}, { altname: 'f' });

const aioFlushCmd = simple('aio_flush', 'completes all outstanding aio requests', async (s) => {
  await s.node.flush();
  return 'ok';
});

const lengthCmd = simple('length', 'gets the length of the current file', async (s) => {
  s.out.stdout(`${ioSizeText(s.node.length)}\n`);
  return 'ok';
}, { altname: 'l' });

/** The offset where qcow2 keeps VM state: just past the guest range its L1 table covers. */
function vmStateOffset(clusterSize: number, length: number, extendedL2: boolean): number {
  const span = clusterSize * (clusterSize / (extendedL2 ? 16 : 8));
  return Math.ceil(length / span) * span;
}

const infoCmd = simple('info', 'prints information about the current file', async (s) => {
  const info = await s.node.info();
  const cluster = info.clusterSize ?? 0;
  const extendedL2 = info.formatSpecific?.data['extended-l2'] === true;
  const vmState = info.format === 'qcow2' && cluster > 0 ? vmStateOffset(cluster, info.virtualSize, extendedL2) : 0;
  let text = `format name: ${info.format === 'ploop' ? 'parallels' : info.format}\ncluster size: ${ioSizeText(cluster)}\nvm state offset: ${ioSizeText(vmState)}\n`;
  if (info.formatSpecific) text += `Format specific information:\n${qemuHumanDump(orderedSpecific(info.formatSpecific.type, info.formatSpecific.data), 1)}`;
  s.out.stdout(text);
  return 'ok';
}, { altname: 'i' });

const truncateCmd: IoCommand = {
  name: 'truncate',
  altname: 't',
  argmin: 1,
  argmax: 3,
  args: '[-m prealloc_mode] off',
  oneline: 'truncates the current file at the given offset',
  writes: true,
  async run(s, argv) {
    const p = getopt(argv, { shortOptions: 'm:' });
    if (!p.ok || p.operands.length !== 1) return usage(s, truncateCmd);
    const prealloc = p.options.find((o) => o.key === 'm')?.value;
    const size = num(s, p.operands[0]);
    if (size === undefined) return 'failed';
    try {
      await s.node.resize(size, { shrink: true, ...(prealloc !== undefined ? { preallocation: prealloc } : {}) });
    } catch (e) {
      s.out.stderr(`vdisk: ${e instanceof Error ? e.message : String(e)}\n`);
      return 'failed';
    }
    return 'ok';
  },
};

const discardCmd: IoCommand = {
  name: 'discard',
  altname: 'd',
  argmin: 2,
  argmax: -1,
  args: '[-Cq] off len',
  oneline: 'discards a number of bytes at a specified offset',
  writes: true,
  async run(s, argv) {
    const p = getopt(argv, { shortOptions: 'Cq' });
    if (!p.ok || p.operands.length !== 2) return usage(s, discardCmd);
    const machine = p.options.some((o) => o.key === 'C');
    const quiet = p.options.some((o) => o.key === 'q');
    const offset = num(s, p.operands[0]);
    if (offset === undefined) return 'failed';
    const count = num(s, p.operands[1]);
    if (count === undefined) return 'failed';
    const t0 = now();
    try {
      if (!inRange(s, offset, count)) throw new Error('out of range');
      await s.node.discard(offset, count);
    } catch (e) {
      s.out.stdout(`discard failed: ${ioFailureText(e instanceof Error && e.message === 'out of range' ? undefined : e)}\n`);
      return 'failed';
    }
    if (!quiet) s.out.stdout(reportText({ op: 'discard', seconds: seconds(t0), offset, count, total: count, ops: 1, machine }));
    return 'ok';
  },
};

/** bdrv_is_allocated over [offset, offset+count) of the top layer: runs of allocated / not. */
async function topLayerRuns(s: IoSession, offset: number, count: number): Promise<Array<{ length: number; allocated: boolean }>> {
  const runs: Array<{ length: number; allocated: boolean }> = [];
  if (count <= 0) return runs;
  for (const x of await s.node.layerStatus(offset, count)) {
    const last = runs[runs.length - 1];
    if (last && last.allocated === x.allocated) last.length += x.length;
    else runs.push({ length: x.length, allocated: x.allocated });
  }
  return runs;
}

const allocCmd: IoCommand = {
  name: 'alloc',
  altname: 'a',
  argmin: 1,
  argmax: 2,
  args: 'offset [count]',
  oneline: 'checks if offset is allocated in the file',
  async run(s, argv) {
    const offset = num(s, argv[0]);
    if (offset === undefined) return 'failed';
    let count = 512;
    if (argv.length === 2) {
      const n = num(s, argv[1]);
      if (n === undefined) return 'failed';
      count = n;
    }
    const available = Math.max(0, Math.min(count, s.node.length - offset));
    let allocated = 0;
    try {
      for (const r of await topLayerRuns(s, offset, available)) if (r.allocated) allocated += r.length;
    } catch (e) {
      s.out.stdout(`is_allocated failed: ${ioFailureText(e)}\n`);
      return 'failed';
    }
    s.out.stdout(`${allocated}/${available} bytes allocated at offset ${ioSizeText(offset)}\n`);
    return 'ok';
  },
};

const mapCmd = simple('map', 'prints the allocated areas of a file', async (s) => {
  let offset = 0;
  let text = '';
  try {
    for (const r of await topLayerRuns(s, 0, s.node.length)) {
      text += `${ioSizeText(r.length)} (0x${r.length.toString(16)}) bytes ${r.allocated ? '    allocated' : 'not allocated'} at offset ${ioSizeText(offset)} (0x${offset.toString(16)})\n`;
      offset += r.length;
    }
  } catch (e) {
    s.out.stdout(text);
    s.out.stderr(`vdisk: Failed to get allocation status: ${ioFailureText(e)}\n`);
    return 'failed';
  }
  s.out.stdout(text);
  return 'ok';
});

const sleepCmd: IoCommand = {
  name: 'sleep',
  argmin: 1,
  argmax: 1,
  args: '',
  oneline: 'waits for the given value in milliseconds',
  run: (s, argv) => sleepFor(s.out, argv),
};

/** sleep's body; it needs no open image (CMD_NOFILE_OK). */
export async function sleepFor(out: IoSession['out'], argv: readonly string[]): Promise<CommandResult> {
  const ms = Number(argv[0]);
  if (!Number.isInteger(ms) || ms < 0) {
    out.stdout(`${argv[0] ?? ''} is not a valid number\n`);
    return 'failed';
  }
  await new Promise((resolve) => setTimeout(resolve, ms));
  return 'ok';
}

/** The command table in qemu-io's order (help lists it this way). */
export const IO_COMMANDS: readonly IoCommand[] = [
  readCmd,
  readvCmd,
  writeCmd,
  writevCmd,
  aioReadCmd,
  aioWriteCmd,
  aioFlushCmd,
  flushCmd,
  truncateCmd,
  lengthCmd,
  infoCmd,
  discardCmd,
  allocCmd,
  mapCmd,
  sleepCmd,
];

export function findCommand(name: string): IoCommand | undefined {
  return IO_COMMANDS.find((c) => c.name === name || c.altname === name);
}

function helpOneline(cmd: IoCommand, asTyped?: string): string {
  let text = asTyped !== undefined ? `${asTyped} ` : `${cmd.name} ${cmd.altname ? `(or ${cmd.altname}) ` : ''}`;
  if (cmd.args) text += `${cmd.args} `;
  return `${text}-- ${cmd.oneline}\n`;
}

/** `help` and `help cmd`. */
export function helpText(name: string | undefined): string {
  if (name === undefined) {
    return `${IO_COMMANDS.map((c) => helpOneline(c)).join('')}help (or ?) [command] -- help for one or all commands\nquit (or q)  -- exit the program\n\nUse 'help commandname' for extended help.\n`;
  }
  const cmd = findCommand(name);
  if (!cmd) return `command ${name} not found\n`;
  return helpOneline(cmd, name) + (cmd.help ?? '');
}
