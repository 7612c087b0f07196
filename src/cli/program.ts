/** Entry of the vdisk command line: dispatches qemu-img style subcommands. */
export async function run(argv: readonly string[]): Promise<number> {
  process.stderr.write(`vdisk: not yet implemented: ${argv.join(' ')}\n`);
  return 1;
}
