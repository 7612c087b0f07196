// Runs `vdisk serve` from the compiled tree for interop tests, independent of how
// the CLI's dispatcher wires subcommands.
import { serveCommand } from '../../../src/cli/commands/serve.js';

process.exitCode = await serveCommand(process.argv.slice(2));
