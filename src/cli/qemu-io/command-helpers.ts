/**
 * Small pieces every qemu-io command module uses: the usage failure, operand
 * parsing with qemu-io's error texts, timing, and the no-argument command shape.
 */
import { cvtnum, cvtnumErrorText, parsePattern } from './numbers.js';
import { bufferView, isZeroRange } from '../../util/zeros.js';
import type { CommandResult, IoCommand, IoSession } from './session.js';

/** qemuio_command_usage: the synopsis on stdout, and a failure. */
export function usage(s: IoSession, cmd: IoCommand): CommandResult {
  s.out.stdout(`${cmd.name} ${cmd.args ?? ''} -- ${cmd.oneline}\n`);
  return 'failed';
}

/**
 * A getopt failure: glibc's complaint ("read: invalid option -- 'x'") on
 * stderr, then the usage. Commands act on the options before the bad one
 * first, as qemu-io's getopt loop does (so `read -P x -y` complains of the pattern).
 */
export function badOption(s: IoSession, cmd: IoCommand, failure: { readonly shortDiagnostic?: string }): CommandResult {
  if (failure.shortDiagnostic !== undefined) s.out.stderr(`${cmd.name}: ${failure.shortDiagnostic}\n`);
  return usage(s, cmd);
}

export function now(): bigint {
  return process.hrtime.bigint();
}

export function seconds(start: bigint): number {
  return Number(now() - start) / 1e9;
}

/** Parses a number operand, printing qemu-io's parse error. */
export function num(s: IoSession, text: string | undefined): number | undefined {
  const n = cvtnum(text ?? '');
  if (typeof n === 'number') return n;
  s.out.stdout(cvtnumErrorText(n, text ?? ''));
  return undefined;
}

export function pattern(s: IoSession, text: string): number | undefined {
  const p = parsePattern(text);
  if (p === undefined) s.out.stdout(`${text} is not a valid pattern byte\n`);
  return p;
}

/** Checks a request against the disk before any buffer is allocated for it. */
export function inRange(s: IoSession, offset: number, count: number): boolean {
  return offset + count <= s.node.length;
}

/** A command that takes no arguments (flush, length, info, map...). */
export function simple(name: string, oneline: string, run: (s: IoSession) => Promise<CommandResult>, extra: Partial<IoCommand> = {}): IoCommand {
  return { name, argmin: 0, argmax: 0, oneline, run: (s) => run(s), ...extra };
}

/**
 * Copy-on-read after a successful read of [offset, offset+count): every
 * cluster of it that the top image does not hold is written into the top
 * image, as zeroes where it reads as zeroes (QEMU does the same, with or
 * without a backing file).
 */
export async function copyOnRead(s: IoSession, offset: number, count: number): Promise<void> {
  if (!s.copyOnRead || count === 0) return;
  const cluster = (await s.node.info()).clusterSize ?? 0;
  const align = cluster > 0 ? cluster : 512;
  const start = Math.floor(offset / align) * align;
  const end = Math.min(Math.ceil((offset + count) / align) * align, s.node.length);
  let pos = start;
  for (const x of await s.node.layerStatus(start, end - start)) {
    if (!x.allocated) {
      const buf = new Uint8Array(x.length);
      await s.node.read(pos, buf);
      if (isZeroRange(bufferView(buf), 0, buf.length)) await s.node.writeZeroes(pos, x.length, { mayUnmap: false });
      else await s.node.write(pos, buf);
    }
    pos += x.length;
  }
}
