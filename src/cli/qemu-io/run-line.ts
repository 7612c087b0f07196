import { findCommand, helpText } from './commands.js';
import type { CommandResult, IoSession } from './session.js';
import { PROGRAM } from '../context.js';

/** breakline(): words separated by single spaces, empty words dropped. */
export function splitCommandLine(line: string): string[] {
  return line.split(' ').filter((w) => w.length > 0);
}

/** What running one line did: whether it failed, and whether it asked to quit. */
export interface LineOutcome {
  readonly result: CommandResult;
  readonly quit: boolean;
}

/** qemuio_command(): looks the command up, checks its argument count and permissions, runs it. */
export async function runCommandLine(session: IoSession, line: string, readOnly: boolean): Promise<LineOutcome> {
  const words = splitCommandLine(line);
  const [name, ...args] = words;
  if (name === undefined) return { result: 'ok', quit: false };
  if (name === 'quit' || name === 'q') return { result: 'ok', quit: true };
  if (name === 'help' || name === '?') {
    if (args.length > 1) {
      session.out.stderr(`bad argument count ${args.length} to ${name}, expected between 0 and 1 arguments\n`);
      return { result: 'failed', quit: false };
    }
    session.out.stdout(helpText(args[0]));
    return { result: 'ok', quit: false };
  }
  const cmd = findCommand(name);
  if (!cmd) {
    session.out.stderr(`command "${name}" not found\n`);
    return { result: 'failed', quit: false };
  }
  if (args.length < cmd.argmin || (cmd.argmax !== -1 && args.length > cmd.argmax)) {
    let expected: string;
    if (cmd.argmax === -1) expected = `at least ${cmd.argmin} arguments`;
    else if (cmd.argmin === cmd.argmax) expected = `${cmd.argmin} arguments`;
    else expected = `between ${cmd.argmin} and ${cmd.argmax} arguments`;
    session.out.stderr(`bad argument count ${args.length} to ${name}, expected ${expected}\n`);
    return { result: 'failed', quit: false };
  }
  if (cmd.writes && readOnly) {
    session.out.stderr(`${PROGRAM}: Block node is read-only\n`);
    return { result: 'failed', quit: false };
  }
  return { result: await cmd.run(session, args), quit: false };
}
