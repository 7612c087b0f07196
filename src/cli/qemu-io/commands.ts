/**
 * The qemu-io command table, assembled here in qemu-io's order, with lookup and
 * help. The commands themselves live in rw-commands.ts, aio-commands.ts and
 * image-commands.ts.
 */
import { aioFlushCmd, aioReadCmd, aioWriteCmd, readvCmd, writevCmd } from './aio-commands.js';
import { allocCmd, flushCmd, infoCmd, lengthCmd, mapCmd, truncateCmd } from './image-commands.js';
import { discardCmd, readCmd, writeCmd } from './rw-commands.js';
import type { CommandResult, IoCommand, IoSession } from './session.js';

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
