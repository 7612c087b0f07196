/**
 * readv, writev, aio_read, aio_write and aio_flush. One factory makes the four
 * vectored commands because they differ only in direction and error wording;
 * the aio ones complete before returning, so aio_flush only has to flush.
 */
import { getopt } from '../getopt.js';
import { ioFailureText } from '../errors-text.js';
import { inRange, now, num, pattern, seconds, simple, usage } from './command-helpers.js';
import { REQUEST_MAX_BYTES } from './numbers.js';
import { hexDump, reportText } from './report.js';
import type { CommandResult, IoCommand } from './session.js';

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

export const readvCmd = vectored({ name: 'readv', write: false, aio: false, args: '[-Cqv] [-P pattern] off len [len..]', oneline: 'reads a number of bytes at a specified offset', optstring: 'CP:qv' });
export const writevCmd = vectored({ name: 'writev', write: true, aio: false, args: '[-Cfq] [-P pattern] off len [len..]', oneline: 'writes a number of bytes at a specified offset', optstring: 'CfqP:' });
export const aioReadCmd = vectored({ name: 'aio_read', write: false, aio: true, args: '[-Cqv] [-P pattern] [-i] off len [len..]', oneline: 'asynchronously reads a number of bytes', optstring: 'CP:qvi' });
export const aioWriteCmd = vectored({ name: 'aio_write', write: true, aio: true, args: '[-Cfiquz] [-P pattern] off len [len..]', oneline: 'asynchronously writes a number of bytes', optstring: 'CfiqP:uz' });

export const aioFlushCmd = simple('aio_flush', 'completes all outstanding aio requests', async (s) => {
  await s.node.flush();
  return 'ok';
});
