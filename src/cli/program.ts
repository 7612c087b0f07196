/** Entry of the vdisk command line: dispatches qemu-img style subcommands (and `io`, qemu-io's face). */
import { createImage, openImage } from '../block/index.js';
import { type CliContext, type CliOutput, type Engine, reportUsage } from './context.js';
import { checkCommand } from './commands/check.js';
import { commitCommand } from './commands/commit.js';
import { jobCommand } from './commands/job.js';
import { compareCommand } from './commands/compare.js';
import { convertCommand } from './commands/convert.js';
import { createCommand } from './commands/create.js';
import { infoCommand } from './commands/info.js';
import { ioCommand } from './commands/io.js';
import { mapCommand } from './commands/map.js';
import { ploopCommand } from './commands/ploop.js';
import { rebaseCommand } from './commands/rebase.js';
import { resizeCommand } from './commands/resize.js';
import { serveCommand } from './commands/serve.js';
import { benchCommand } from './commands/bench.js';
import { snapshotCommand } from './commands/snapshot.js';
import { amendCommand } from './commands/amend.js';
import { bitmapCommand } from './commands/bitmap.js';
import { measureCommand } from './commands/measure.js';
import { ddCommand } from './commands/dd.js';
import { HELP_TEXT } from './help-text.js';

type Command = (ctx: CliContext, argv: readonly string[]) => Promise<number>;

const COMMANDS: Readonly<Record<string, Command>> = {
  create: createCommand,
  info: infoCommand,
  map: mapCommand,
  ploop: ploopCommand,
  convert: convertCommand,
  io: ioCommand,
  bench: benchCommand,
  serve: (_ctx, argv) => serveCommand(argv),
  snapshot: snapshotCommand,
  amend: amendCommand,
  bitmap: bitmapCommand,
  check: checkCommand,
  commit: commitCommand,
  job: jobCommand,
  compare: compareCommand,
  resize: resizeCommand,
  rebase: rebaseCommand,
  measure: measureCommand,
  dd: ddCommand,
};

/** The subcommands `run` dispatches (for --help's completeness test). */
export function commandNames(): string[] {
  return Object.keys(COMMANDS);
}

/** The engine of this package: the block layer's open and create. */
export function blockEngine(): Engine {
  return { openImage, createImage };
}

const VERSION_TEXT = 'vdisk version 0.1.0 (qemu-img 7.2 compatible)\n';

/** Runs one command line; returns the exit status. */
export async function run(argv: readonly string[], options: { out?: CliOutput; engine?: Engine } = {}): Promise<number> {
  const ctx: CliContext = {
    out: options.out ?? { stdout: (t) => void process.stdout.write(t), stderr: (t) => void process.stderr.write(t) },
    engine: options.engine ?? blockEngine(),
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
  const command = COMMANDS[name];
  if (!command) return reportUsage(ctx, `Command not found: ${name}`);
  return command(ctx, rest);
}
