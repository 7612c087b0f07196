import type { ImageNode } from '../../block/types.js';
import type { CliOutput } from '../context.js';

/** One qemu-io session: the open image and where output goes. */
export interface IoSession {
  readonly node: ImageNode;
  readonly out: CliOutput;
  /** -q was given (no informational messages). aio_* requests run to completion in order. */
  readonly quietOpen: boolean;
  /** -C: what a read finds unallocated in the top image is copied into it, whole clusters at a time. */
  readonly copyOnRead?: boolean;
}

/** A command's result; any failure makes qemu-io exit with 1. */
export type CommandResult = 'ok' | 'failed';

export interface IoCommand {
  readonly name: string;
  readonly altname?: string;
  readonly argmin: number;
  /** -1: no upper bound. */
  readonly argmax: number;
  /** The synopsis; absent for commands that take none (help then prints no gap before "--"). */
  readonly args?: string;
  readonly oneline: string;
  readonly help?: string;
  /** Needs a writable image. */
  readonly writes?: boolean;
  /** Present for commands that also run without an open image (qemu-io's CMD_NOFILE_OK). */
  readonly runWithoutFile?: (out: CliOutput, argv: readonly string[]) => Promise<CommandResult>;
  run(session: IoSession, argv: readonly string[]): Promise<CommandResult>;
}
