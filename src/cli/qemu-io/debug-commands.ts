/**
 * qemu-io's debugging commands: the blkdebug breakpoint family (break,
 * remove_break, resume, wait_break) and sigraise. vdisk has no blkdebug
 * driver, so every image answers the breakpoint commands as a QEMU image
 * without blkdebug does: the operation is not supported.
 */
import { cvtnum, cvtnumErrorText } from './numbers.js';
import type { CliOutput } from '../context.js';
import type { CommandResult, IoCommand } from './session.js';

/** Linux's NSIG: raise() takes 1..64; 0 and 65 are accepted by qemu-io and do nothing. */
const NSIG = 65;

/**
 * Signals qemu-io handles and so survives (SIGBUS, SIGUSR1, SIGALRM, SIGIO,
 * glibc's first real-time signal); Node would die of some of them or start
 * its inspector on SIGUSR1, so they are not raised at all.
 */
const SURVIVED: readonly number[] = [7, 10, 14, 29, 32];

function unsupported(text: string): IoCommand['run'] {
  return async (s) => {
    s.out.stdout(`${text}: Operation not supported\n`);
    return 'failed';
  };
}

export const breakCmd: IoCommand = {
  name: 'break',
  argmin: 2,
  argmax: 2,
  args: 'event tag',
  oneline: 'sets a breakpoint on event and tags the stopped request as tag',
  run: unsupported('Could not set breakpoint'),
};

export const removeBreakCmd: IoCommand = {
  name: 'remove_break',
  argmin: 1,
  argmax: 1,
  args: 'tag',
  oneline: 'remove a breakpoint by tag',
  run: (s, argv) => unsupported(`Could not remove breakpoint ${argv[0] ?? ''}`)(s, argv),
};

export const resumeCmd: IoCommand = {
  name: 'resume',
  argmin: 1,
  argmax: 1,
  args: 'tag',
  oneline: 'resumes the request tagged as tag',
  run: unsupported('Could not resume request'),
};

export const waitBreakCmd: IoCommand = {
  name: 'wait_break',
  argmin: 1,
  argmax: 1,
  args: 'tag',
  oneline: 'waits for the suspension of a request',
  // qemu-io polls forever for a request that can never be suspended; vdisk says so and fails instead of hanging.
  run: unsupported('Could not wait for breakpoint'),
};

const SIGRAISE_HELP = `
 raises the given signal

 Example:
 'sigraise 15' - raises SIGTERM

 Invokes raise(signal), where "signal" is the mandatory integer argument
 given to sigraise.

`;

/** sigraise's body; it needs no open image. */
async function raiseSignal(out: CliOutput, argv: readonly string[]): Promise<CommandResult> {
  const text = argv[0] ?? '';
  const sig = cvtnum(text);
  if (typeof sig !== 'number') {
    out.stdout(cvtnumErrorText(sig, text));
    return 'failed';
  }
  if (sig > NSIG) {
    out.stdout(`signal argument '${text}' is too large to be a valid signal\n`);
    return 'failed';
  }
  if (sig > 0 && sig < NSIG && !SURVIVED.includes(sig)) {
    try {
      process.kill(process.pid, sig);
    } catch {
      // raise() fails quietly for a signal the system refuses; so does qemu-io.
    }
  }
  return 'ok';
}

export const sigraiseCmd: IoCommand = {
  name: 'sigraise',
  argmin: 1,
  argmax: 1,
  args: 'signal',
  oneline: 'raises a signal',
  help: SIGRAISE_HELP,
  run: (s, argv) => raiseSignal(s.out, argv),
  runWithoutFile: raiseSignal,
};
