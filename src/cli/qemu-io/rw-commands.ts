/**
 * read, write and discard: the single-request commands that print I/O
 * statistics (the vectored and aio ones are in aio-commands.ts).
 */
import { getopt } from '../getopt.js';
import { ioFailureText } from '../errors-text.js';
import { badOption, copyOnRead, inRange, now, num, pattern, seconds, usage } from './command-helpers.js';
import { REQUEST_MAX_BYTES } from './numbers.js';
import { hexDump, reportText } from './report.js';
import type { CommandResult, IoCommand, IoSession } from './session.js';
import { readWholeFile } from '../../host/fs-calls.js';

/** -b and -c work on whole sectors: qemu-io refuses other offsets and counts before any I/O. */
function sectorAligned(s: IoSession, offset: number, count: number): boolean {
  if (offset % 512 !== 0) s.out.stdout(`${offset} is not a sector-aligned value for 'offset'\n`);
  else if (count % 512 !== 0) s.out.stdout(`${count} is not a sector-aligned value for 'count'\n`);
  else return true;
  return false;
}

/** The first combination of write's flags that qemu-io refuses, in the order it checks them. */
function writeConflict(f: {
  vmState: boolean; zero: boolean; fua: boolean; compressed: boolean; noFallback: boolean; unmap: boolean; patGiven: boolean; source: boolean;
}): string | undefined {
  if (f.vmState && f.zero) return '-b and -z cannot be specified at the same time';
  if (f.fua && (f.vmState || f.compressed)) return '-f and -b or -c cannot be specified at the same time';
  if (f.noFallback && !f.zero) return '-n requires -z to be specified';
  if (f.unmap && !f.zero) return '-u requires -z to be specified';
  if (Number(f.zero) + Number(f.patGiven) + Number(f.source) > 1) return 'Only one of -z, -P, and -s can be specified at the same time';
  return undefined;
}

/** write -s: the file's bytes, repeated to fill `count`; qemu-io's complaints on stderr when it cannot. */
async function bufferFromFile(s: IoSession, count: number, path: string): Promise<Uint8Array | undefined> {
  let head: Uint8Array;
  try {
    const data = await readWholeFile(path);
    head = data.subarray(0, Math.min(count, data.length));
  } catch (e) {
    s.out.stderr(`${path}: ${ioFailureText(e)}\n`);
    return undefined;
  }
  if (head.length === 0) {
    s.out.stderr(`${path}: file is empty\n`);
    return undefined;
  }
  const buf = new Uint8Array(count);
  for (let at = 0; at < count; at += head.length) buf.set(head.subarray(0, Math.min(head.length, count - at)), at);
  return buf;
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

export const readCmd: IoCommand = {
  name: 'read',
  altname: 'r',
  argmin: 2,
  argmax: -1,
  args: '[-abCqv] [-P pattern [-s off] [-l len]] off len',
  oneline: 'reads a number of bytes at a specified offset',
  help: READ_HELP,
  async run(s, argv) {
    // -a is in the synopsis but not among the letters qemu-io 7.2 accepts.
    const p = getopt(argv, { shortOptions: 'bCl:pP:qs:v' });
    let machine = false, quiet = false, verbose = false, vmState = false;
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
      } else if (key === 'b') vmState = true;
    }
    if (!p.ok) return badOption(s, readCmd, p);
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
    if (vmState) {
      if (!sectorAligned(s, offset, count)) return 'failed';
      // No driver of vdisk keeps VM state.
      s.out.stdout('read failed: Operation not supported\n');
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
      await copyOnRead(s, offset, count);
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

export const writeCmd: IoCommand = {
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
    let machine = false, quiet = false, compressed = false, zero = false, fua = false, noFallback = false, unmap = false, vmState = false;
    let pat = 0xcd;
    let patGiven = false;
    let sourceFile: string | undefined;
    for (const { key, value = '' } of p.options) {
      if (key === 'C') machine = true;
      else if (key === 'q') quiet = true;
      else if (key === 'c') compressed = true;
      else if (key === 'z') zero = true;
      else if (key === 'f') fua = true;
      else if (key === 'n') noFallback = true;
      else if (key === 'u') unmap = true;
      else if (key === 'b') vmState = true;
      else if (key === 's') sourceFile = value;
      else if (key === 'P') {
        const v = pattern(s, value);
        if (v === undefined) return 'failed';
        pat = v;
        patGiven = true;
      }
    }
    if (!p.ok) return badOption(s, writeCmd, p);
    if (p.operands.length !== 2) return usage(s, writeCmd);
    const conflict = writeConflict({ vmState, zero, fua, compressed, noFallback, unmap, patGiven, source: sourceFile !== undefined });
    if (conflict !== undefined) {
      s.out.stdout(`${conflict}\n`);
      return 'failed';
    }
    const offset = num(s, p.operands[0]);
    if (offset === undefined) return 'failed';
    const count = num(s, p.operands[1]);
    if (count === undefined) return 'failed';
    if (count > REQUEST_MAX_BYTES && !noFallback) {
      s.out.stdout(`length cannot exceed ${REQUEST_MAX_BYTES} without -n, given ${p.operands[1] ?? ''}\n`);
      return 'failed';
    }
    if ((vmState || compressed) && !sectorAligned(s, offset, count)) return 'failed';
    let buf: Uint8Array | undefined;
    if (!zero) {
      buf = sourceFile === undefined ? new Uint8Array(count).fill(pat) : await bufferFromFile(s, count, sourceFile);
      if (buf === undefined) return 'failed';
    }
    if (vmState) {
      s.out.stdout('write failed: Operation not supported\n');
      return 'failed';
    }
    if (!inRange(s, offset, count)) {
      s.out.stdout(`write failed: ${ioFailureText(undefined)}\n`);
      return 'failed';
    }
    const t0 = now();
    try {
      if (buf === undefined) await s.node.writeZeroes(offset, count, { mayUnmap: unmap, fua, fastZero: noFallback });
      else if (compressed) await s.node.writeCompressed(offset, buf);
      else await s.node.write(offset, buf, { fua });
    } catch (e) {
      s.out.stdout(`write failed: ${ioFailureText(e)}\n`);
      return 'failed';
    }
    const elapsed = seconds(t0);
    if (!quiet) s.out.stdout(reportText({ op: 'wrote', seconds: elapsed, offset, count, total: count, ops: 1, machine }));
    return 'ok';
  },
};

const DISCARD_HELP = `
 discards a range of bytes from the given offset

 Example:
 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file

 Discards a segment of the currently open file.
 -C, -- report statistics in a machine parsable format
 -q, -- quiet mode, do not show I/O statistics

`;

export const discardCmd: IoCommand = {
  name: 'discard',
  altname: 'd',
  argmin: 2,
  argmax: -1,
  args: '[-Cq] off len',
  oneline: 'discards a number of bytes at a specified offset',
  help: DISCARD_HELP,
  writes: true,
  async run(s, argv) {
    const p = getopt(argv, { shortOptions: 'Cq' });
    if (!p.ok) return badOption(s, discardCmd, p);
    if (p.operands.length !== 2) return usage(s, discardCmd);
    const machine = p.options.some((o) => o.key === 'C');
    const quiet = p.options.some((o) => o.key === 'q');
    const offset = num(s, p.operands[0]);
    if (offset === undefined) return 'failed';
    const count = num(s, p.operands[1]);
    if (count === undefined) return 'failed';
    if (count > REQUEST_MAX_BYTES) {
      s.out.stdout(`length cannot exceed ${REQUEST_MAX_BYTES}, given ${p.operands[1] ?? ''}\n`);
      return 'failed';
    }
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
