import type { CreateOptions } from '../formats/registry-types.js';
import type { FormatName } from '../formats/driver.js';
import type { ImageNode } from '../block/types.js';
import type { EngineOpenOptions } from './qcow2-tuning.js';

/** Where a command writes its output; tests capture it, main.ts sends it to the process. */
export interface CliOutput {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Whether each stream is a terminal; absent means neither is (captured output). */
  readonly terminal?: { readonly stdout: boolean; readonly stderr: boolean };
}

/** The engine calls the CLI needs, injected so commands can be tested against fakes. */
export interface Engine {
  openImage(path: string, options: EngineOpenOptions): Promise<ImageNode>;
  createImage(path: string, format: FormatName, options: CreateOptions): Promise<void>;
}

export interface CliContext {
  readonly out: CliOutput;
  readonly engine: Engine;
  /** Lines of interactive input for `vdisk io` without -c; absent when there is none. */
  readonly stdinLines?: () => AsyncIterable<string>;
}

/** Program name used where QEMU's tools print "qemu-img: " / "qemu-io: ". */
export const PROGRAM = 'vdisk';

/** error_report(): "vdisk: message\n" on stderr. */
export function reportError(ctx: CliContext, message: string): void {
  ctx.out.stderr(`${PROGRAM}: ${message}\n`);
}

/** error_exit(): the message plus the pointer to --help; the caller exits with 1. */
export function reportUsage(ctx: CliContext, message: string): number {
  ctx.out.stderr(`${PROGRAM}: ${message}\nTry '${PROGRAM} --help' for more information\n`);
  return 1;
}
