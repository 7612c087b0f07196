import { reportError, type CliContext } from './context.js';
import { chooseProgress, parseProgressMode, type ProgressMode, type ProgressPrinter, type ProgressRequest } from './format/progress.js';

/** The long option every command with progress accepts: --progress=text|json. */
export const PROGRESS_LONG_OPTION = { name: 'progress', hasArg: true, key: 'progress' } as const;

/** The value of --progress, or undefined once the error is reported (the command then exits 1). */
export function progressModeOption(ctx: CliContext, value: string | undefined): ProgressMode | undefined {
  const mode = parseProgressMode(value ?? '');
  if (mode === undefined) reportError(ctx, `Invalid progress mode: '${value ?? ''}' (use 'text' or 'json')`);
  return mode;
}

/** The progress printer for a command, by the rule in format/progress.ts. */
export function commandProgress(ctx: CliContext, request: ProgressRequest, options: { phase: string; minStep?: number }): ProgressPrinter {
  return chooseProgress(
    request,
    {
      stdout: (t) => ctx.out.stdout(t),
      stderr: (t) => ctx.out.stderr(t),
      // Asked only when text progress is on: the answer makes the process's stdout and stderr
      // streams, which load Node's stream modules (7-8 ms of a convert's start).
      get stdoutIsTerminal() {
        return ctx.out.terminal?.stdout ?? false;
      },
      get stderrIsTerminal() {
        return ctx.out.terminal?.stderr ?? false;
      },
    },
    options,
  );
}
