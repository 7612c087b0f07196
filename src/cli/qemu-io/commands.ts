/**
 * The qemu-io command table and its lookup. The commands themselves live in
 * rw-commands.ts, aio-commands.ts, image-commands.ts and debug-commands.ts;
 * help.ts lists them.
 */
import { aioFlushCmd, aioReadCmd, aioWriteCmd, readvCmd, writevCmd } from './aio-commands.js';
import { allocCmd, flushCmd, infoCmd, lengthCmd, mapCmd, truncateCmd } from './image-commands.js';
import { discardCmd, readCmd, writeCmd } from './rw-commands.js';
import { breakCmd, removeBreakCmd, resumeCmd, sigraiseCmd, waitBreakCmd } from './debug-commands.js';
import type { CliOutput } from '../context.js';
import type { CommandResult, IoCommand } from './session.js';

const sleepCmd: IoCommand = {
  name: 'sleep',
  argmin: 1,
  argmax: 1,
  oneline: 'waits for the given value in milliseconds',
  run: (s, argv) => sleepFor(s.out, argv),
  runWithoutFile: sleepFor,
};

/** sleep's body; it needs no open image (CMD_NOFILE_OK). */
async function sleepFor(out: CliOutput, argv: readonly string[]): Promise<CommandResult> {
  const ms = Number(argv[0]);
  if (!Number.isInteger(ms) || ms < 0) {
    out.stdout(`${argv[0] ?? ''} is not a valid number\n`);
    return 'failed';
  }
  await new Promise((resolve) => setTimeout(resolve, ms));
  return 'ok';
}

/** The commands that work on the open image (and sleep and sigraise, which need none). */
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
  breakCmd,
  removeBreakCmd,
  resumeCmd,
  waitBreakCmd,
  sigraiseCmd,
  sleepCmd,
];

export function findCommand(name: string): IoCommand | undefined {
  return IO_COMMANDS.find((c) => c.name === name || c.altname === name);
}
