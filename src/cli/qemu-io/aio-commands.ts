/**
 * readv, writev, aio_read, aio_write and aio_flush. One factory makes the four
 * vectored commands because they differ only in direction and error wording;
 * the aio ones complete before returning, so aio_flush only has to flush.
 */
import { getopt } from '../getopt.js';
import { ioFailureText } from '../errors-text.js';
import { badOption, copyOnRead, inRange, now, num, pattern, seconds, simple, usage } from './command-helpers.js';
import { REQUEST_MAX_BYTES } from './numbers.js';
import { hexDump, reportText } from './report.js';
import type { CommandResult, IoCommand } from './session.js';

const READV_HELP = `
 reads a range of bytes from the given offset into multiple buffers

 Example:
 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file

 Reads a segment of the currently open file, optionally dumping it to the
 standard output stream (with -v option) for subsequent inspection.
 Uses multiple iovec buffers if more than one byte range is specified.
 -C, -- report statistics in a machine parsable format
 -P, -- use a pattern to verify read data
 -v, -- dump buffer to standard output
 -q, -- quiet mode, do not show I/O statistics

`;

const WRITEV_HELP = `
 writes a range of bytes from the given offset source from multiple buffers

 Example:
 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file

 Writes into a segment of the currently open file, using a buffer
 filled with a set pattern (0xcdcdcdcd).
 -P, -- use different pattern to fill file
 -C, -- report statistics in a machine parsable format
 -f, -- use Force Unit Access semantics
 -q, -- quiet mode, do not show I/O statistics

`;

const AIO_READ_HELP = `
 asynchronously reads a range of bytes from the given offset

 Example:
 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file

 Reads a segment of the currently open file, optionally dumping it to the
 standard output stream (with -v option) for subsequent inspection.
 The read is performed asynchronously and the aio_flush command must be
 used to ensure all outstanding aio requests have been completed.
 Note that due to its asynchronous nature, this command will be
 considered successful once the request is submitted, independently
 of potential I/O errors or pattern mismatches.
 -C, -- report statistics in a machine parsable format
 -P, -- use a pattern to verify read data
 -i, -- treat request as invalid, for exercising stats
 -v, -- dump buffer to standard output
 -q, -- quiet mode, do not show I/O statistics

`;

const AIO_WRITE_HELP = `
 asynchronously writes a range of bytes from the given offset source
 from multiple buffers

 Example:
 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file

 Writes into a segment of the currently open file, using a buffer
 filled with a set pattern (0xcdcdcdcd).
 The write is performed asynchronously and the aio_flush command must be
 used to ensure all outstanding aio requests have been completed.
 Note that due to its asynchronous nature, this command will be
 considered successful once the request is submitted, independently
 of potential I/O errors or pattern mismatches.
 -P, -- use different pattern to fill file
 -C, -- report statistics in a machine parsable format
 -f, -- use Force Unit Access semantics
 -i, -- treat request as invalid, for exercising stats
 -q, -- quiet mode, do not show I/O statistics
 -u, -- with -z, allow unmapping
 -z, -- write zeroes using blk_aio_pwrite_zeroes

`;

/**
 * readv/writev/aio_read/aio_write: an offset and several lengths, done as one
 * request. An aio request counts as done once submitted: its failures (I/O or
 * pattern) are printed but do not fail the command, and -i stops at once.
 */
function vectored(opts: { name: string; write: boolean; aio: boolean; args: string; oneline: string; optstring: string; help: string }): IoCommand {
  const cmd: IoCommand = {
    name: opts.name,
    argmin: 2,
    argmax: -1,
    args: opts.args,
    oneline: opts.oneline,
    help: opts.help,
    writes: opts.write,
    async run(s, argv) {
      const p = getopt(argv, { shortOptions: opts.optstring });
      let machine = false, quiet = false, verbose = false, fua = false, zero = false, unmap = false;
      let pat: number | undefined;
      for (const { key, value = '' } of p.options) {
        if (key === 'C') machine = true;
        else if (key === 'q') quiet = true;
        else if (key === 'v') verbose = true;
        else if (key === 'f') fua = true;
        else if (key === 'z') zero = true;
        else if (key === 'u') unmap = true;
        else if (key === 'i') {
          // Accounted as an invalid request and never submitted; the rest of the line is not looked at.
          s.out.stdout(`injecting invalid ${opts.write ? 'write' : 'read'} request\n`);
          return 'ok';
        } else if (key === 'P') {
          pat = pattern(s, value);
          if (pat === undefined) return 'failed';
        }
      }
      if (!p.ok) return badOption(s, cmd, p);
      if (p.operands.length < 2) return usage(s, cmd);
      if (unmap && !zero) {
        s.out.stdout('-u requires -z to be specified\n');
        return 'failed';
      }
      if (zero && p.operands.length !== 2) {
        s.out.stdout('-z supports only a single length parameter\n');
        return 'failed';
      }
      const offset = num(s, p.operands[0]);
      if (offset === undefined) return 'failed';
      let count = 0;
      for (const text of p.operands.slice(1)) {
        const n = num(s, text);
        if (n === undefined) return 'failed';
        if (zero) {
          count = n;
          break;
        }
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
      // What a failed request prints: aio_read reports through its readv callback.
      const failWord = opts.name === 'aio_read' ? 'readv' : opts.name;
      const done: CommandResult = opts.aio ? 'ok' : 'failed';
      const failed = (e: unknown): CommandResult => {
        s.out.stdout(`${failWord} failed: ${ioFailureText(e)}\n`);
        return done;
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
          await copyOnRead(s, offset, count);
        }
      } catch (e) {
        return failed(e);
      }
      const elapsed = seconds(t0);
      let result: CommandResult = 'ok';
      if (buf && pat !== undefined && buf.some((b) => b !== pat)) {
        s.out.stdout(`Pattern verification failed at offset ${offset}, ${count} bytes\n`);
        result = done;
      }
      if (quiet) return result;
      if (buf && verbose) s.out.stdout(hexDump(buf, offset));
      s.out.stdout(reportText({ op: opts.write ? 'wrote' : 'read', seconds: elapsed, offset, count, total: count, ops: 1, machine }));
      return result;
    },
  };
  return cmd;
}

export const readvCmd = vectored({ name: 'readv', write: false, aio: false, args: '[-Cqv] [-P pattern] off len [len..]', oneline: 'reads a number of bytes at a specified offset', optstring: 'CP:qv', help: READV_HELP });
export const writevCmd = vectored({ name: 'writev', write: true, aio: false, args: '[-Cfq] [-P pattern] off len [len..]', oneline: 'writes a number of bytes at a specified offset', optstring: 'CfqP:', help: WRITEV_HELP });
export const aioReadCmd = vectored({ name: 'aio_read', write: false, aio: true, args: '[-Ciqv] [-P pattern] off len [len..]', oneline: 'asynchronously reads a number of bytes', optstring: 'CP:qvi', help: AIO_READ_HELP });
export const aioWriteCmd = vectored({ name: 'aio_write', write: true, aio: true, args: '[-Cfiquz] [-P pattern] off len [len..]', oneline: 'asynchronously writes a number of bytes', optstring: 'CfiqP:uz', help: AIO_WRITE_HELP });

export const aioFlushCmd = simple('aio_flush', 'completes all outstanding aio requests', async (s) => {
  await s.node.flush();
  return 'ok';
});
