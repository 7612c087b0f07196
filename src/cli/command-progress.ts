import type { CliContext } from './context.js';
import { chooseProgress, type ProgressPrinter, type ProgressRequest } from './format/progress.js';

/** The long option every command with progress accepts: --progress=text|json. */
export const PROGRESS_LONG_OPTION = { name: 'progress', hasArg: true, key: 'progress' } as const;

/** The progress printer for a command, by the rule in format/progress.ts. */
export function commandProgress(ctx: CliContext, request: ProgressRequest, options: { phase: string; minStep?: number }): ProgressPrinter {
  return chooseProgress(
    request,
    {
      stdout: (t) => ctx.out.stdout(t),
      stderr: (t) => ctx.out.stderr(t),
      stdoutIsTerminal: ctx.out.terminal?.stdout ?? false,
      stderrIsTerminal: ctx.out.terminal?.stderr ?? false,
    },
    options,
  );
}
