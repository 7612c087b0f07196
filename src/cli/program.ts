/** Entry of the vdisk command line: dispatches qemu-img style subcommands (and `io`, qemu-io's face). */
import { createImage } from '../block/index.js';
import { type CliContext, type CliOutput, type Engine, reportUsage } from './context.js';
import { HELP_TEXT } from './help-text.js';
import { openTuned } from './qcow2-tuning.js';
import { fdWriter } from './fd-output.js';

type Command = (ctx: CliContext, argv: readonly string[]) => Promise<number>;

/**
 * Each command's module is loaded only when it runs: importing all of them (the
 * NBD server, the daemon, every job) cost ~100 ms at every start.
 */
const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  create: async () => (await import('./commands/create.js')).createCommand,
  info: async () => (await import('./commands/info.js')).infoCommand,
  map: async () => (await import('./commands/map.js')).mapCommand,
  ploop: async () => (await import('./commands/ploop.js')).ploopCommand,
  convert: async () => (await import('./commands/convert.js')).convertCommand,
  io: async () => (await import('./commands/io.js')).ioCommand,
  bench: async () => (await import('./commands/bench.js')).benchCommand,
  serve: async () => {
    const { serveCommand } = await import('./commands/serve.js');
    return (_ctx, argv) => serveCommand(argv);
  },
  snapshot: async () => (await import('./commands/snapshot.js')).snapshotCommand,
  amend: async () => (await import('./commands/amend.js')).amendCommand,
  bitmap: async () => (await import('./commands/bitmap.js')).bitmapCommand,
  check: async () => (await import('./commands/check.js')).checkCommand,
  commit: async () => (await import('./commands/commit.js')).commitCommand,
  job: async () => (await import('./commands/job.js')).jobCommand,
  compare: async () => (await import('./commands/compare.js')).compareCommand,
  resize: async () => (await import('./commands/resize.js')).resizeCommand,
  rebase: async () => (await import('./commands/rebase.js')).rebaseCommand,
  measure: async () => (await import('./commands/measure.js')).measureCommand,
  dd: async () => (await import('./commands/dd.js')).ddCommand,
};

/** The subcommands `run` dispatches (for --help's completeness test). */
export function commandNames(): string[] {
  return Object.keys(COMMANDS);
}

/** The engine of this package: the block layer's open (with qcow2's runtime options) and create. */
export function blockEngine(): Engine {
  return { openImage: openTuned, createImage };
}

const VERSION_TEXT = 'vdisk version 0.1.0 (qemu-img 7.2 compatible)\n';

/**
 * The process's output: written to its descriptors (fd-output.ts); the
 * streams are made only when a command asks whether they are terminals.
 */
function processOutput(): CliOutput {
  return {
    stdout: fdWriter(1),
    stderr: fdWriter(2),
    terminal: {
      get stdout(): boolean {
        return process.stdout.isTTY === true;
      },
      get stderr(): boolean {
        return process.stderr.isTTY === true;
      },
    },
  };
}

/** Runs one command line; returns the exit status. */
export async function run(argv: readonly string[], options: { out?: CliOutput; engine?: Engine; stdinLines?: () => AsyncIterable<string> } = {}): Promise<number> {
  const ctx: CliContext = {
    out: options.out ?? processOutput(),
    engine: options.engine ?? blockEngine(),
    ...(options.stdinLines ? { stdinLines: options.stdinLines } : {}),
  };
  const [name, ...rest] = argv;
  if (name === undefined) return reportUsage(ctx, 'Not enough arguments');
  if (name === '-h' || name === '--help' || name === 'help') {
    ctx.out.stdout(HELP_TEXT);
    return 0;
  }
  if (name === '-V' || name === '--version') {
    ctx.out.stdout(VERSION_TEXT);
    return 0;
  }
  const load = COMMANDS[name];
  if (!load) return reportUsage(ctx, `Command not found: ${name}`);
  return (await load())(ctx, rest);
}
