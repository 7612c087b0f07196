import { findCommand } from './commands.js';
import { FILE_COMMANDS, noFile } from './file-commands.js';
import { helpText } from './help.js';
import type { IoFile } from './open-file.js';
import type { CommandResult } from './session.js';
import { type CliOutput, PROGRAM } from '../context.js';

/** breakline(): words separated by single spaces, empty words dropped. */
export function splitCommandLine(line: string): string[] {
  return line.split(' ').filter((w) => w.length > 0);
}

/** What running one line did: whether it failed, and whether it asked to quit (or abort). */
export interface LineOutcome {
  readonly result: CommandResult;
  readonly quit: boolean;
  /** `abort`: the session ends as a crash would (exit status 134, the image not closed). */
  readonly aborted?: boolean;
}

function badCount(out: CliOutput, name: string, cmd: { argmin: number; argmax: number }, count: number): LineOutcome | undefined {
  if (count >= cmd.argmin && (cmd.argmax === -1 || count <= cmd.argmax)) return undefined;
  let expected: string;
  if (cmd.argmax === -1) expected = `at least ${cmd.argmin} arguments`;
  else if (cmd.argmin === cmd.argmax) expected = `${cmd.argmin} arguments`;
  else expected = `between ${cmd.argmin} and ${cmd.argmax} arguments`;
  out.stderr(`bad argument count ${count} to ${name}, expected ${expected}\n`);
  return { result: 'failed', quit: false };
}

/** qemuio_command(): looks the command up, checks its argument count, the open file and permissions, runs it. */
export async function runCommandLine(file: IoFile, out: CliOutput, line: string): Promise<LineOutcome> {
  const words = splitCommandLine(line);
  const [name, ...args] = words;
  if (name === undefined) return { result: 'ok', quit: false };
  if (name === 'quit' || name === 'q') return { result: 'ok', quit: true };
  if (name === 'help' || name === '?') {
    if (args.length > 1) {
      out.stderr(`bad argument count ${args.length} to ${name}, expected between 0 and 1 arguments\n`);
      return { result: 'failed', quit: false };
    }
    const text = helpText(args[0]);
    out.stdout(text ?? `command ${args[0] ?? ''} not found\n`);
    return { result: text === undefined ? 'failed' : 'ok', quit: false };
  }
  const fileCmd = FILE_COMMANDS.find((c) => c.name === name);
  if (fileCmd) {
    const bad = badCount(out, name, fileCmd, args.length);
    if (bad) return bad;
    const result = await fileCmd.run(file, out, args);
    return result === 'abort' ? { result: 'failed', quit: true, aborted: true } : { result, quit: false };
  }
  const cmd = findCommand(name);
  if (!cmd) {
    out.stderr(`command "${name}" not found\n`);
    return { result: 'failed', quit: false };
  }
  // init_check_command() comes first: the open file, then the permission; then the argument count.
  const session = file.session;
  if (!session) {
    if (!cmd.runWithoutFile) return { result: noFile(out), quit: false };
    return badCount(out, name, cmd, args.length) ?? { result: await cmd.runWithoutFile(out, args), quit: false };
  }
  if (cmd.writes && file.readOnly) {
    out.stderr(`${PROGRAM}: Block node is read-only\n`);
    return { result: 'failed', quit: false };
  }
  const bad = badCount(out, name, cmd, args.length);
  if (bad) return bad;
  return { result: await cmd.run(session, args), quit: false };
}
