/**
 * `vdisk --help`: qemu-img's help layout, with qemu-img 7.2's own synopsis line
 * for every qemu-img subcommand (so a user finds what the manual says), then
 * vdisk's own subcommands.
 */

/** qemu-img --help's "Command syntax" lines, verbatim, in its order. */
const QEMU_IMG_SYNOPSES: readonly string[] = [
  'amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename',
  'bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename',
  'bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] [--image-opts | -f fmt] filename bitmap',
  'check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename',
  'commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit] [-d] [-p] filename',
  'compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2',
  'convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] filename [filename2 [...]] output_filename',
  'create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]',
  'dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output',
  'info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename',
  'map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename',
  'measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] [-l snapshot_param] filename]',
  'snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename',
  'rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename',
  'resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size',
];

/** vdisk's subcommands that qemu-img does not have (qemu-io, qemu-nbd / qemu-storage-daemon, jobs, ploop stacks). */
const VDISK_SYNOPSES: readonly string[] = [
  'io [-f fmt] [-r] [-n] [-t cache] [-i aio] [-U] [-q] [-c command]... filename',
  'job list|commit|stream|mirror|complete|cancel|pause|resume|set-speed|wait --qmp PATH [options]',
  'ploop list|snapshot|merge [--forward] [--depth N] DiskDescriptor.xml',
  'serve [-f fmt] [-k socket | -b addr -p port] [-x name] [-r] [-t] [-e shared] [--cache mode] [filename]',
];

/** The subcommand named by each synopsis line. */
export function synopsisCommands(): string[] {
  return [...QEMU_IMG_SYNOPSES, ...VDISK_SYNOPSES].map((line) => line.split(' ', 1)[0] ?? '');
}

export const HELP_TEXT = `usage: vdisk [standard options] command [command options]
vdisk, a drop-in for qemu-img and qemu-io

    '-h', '--help'       display this help and exit
    '-V', '--version'    output version information and exit

Command syntax:
${[...QEMU_IMG_SYNOPSES, ...VDISK_SYNOPSES].map((line) => `  ${line}\n`).join('')}
Run 'vdisk serve --help', 'vdisk io -c help' or 'vdisk job --help' for those commands' own options.
`;
