import { monotonicMs } from '../../util/clock.js';
import { cFixed } from './size-text.js';

/**
 * Progress of a long operation (convert, commit, rebase, compare, check -r).
 *
 * Two renderings:
 *  - text: qemu-img's -p progress (util/qemu-progress.c): "    (12.50/100%)\r"
 *    on stdout, printed at 0, whenever the value moved by more than the
 *    minimum step, and at 100; the end is a bare newline (progress_simple_end).
 *  - JSON lines on stderr, one object per line, at the same moments the text
 *    would be printed (plus one line with done 0 when the total becomes known):
 *      {"phase":"convert","done":1048576,"total":4194304,"elapsed":0.125}
 *    phase:   the command ("convert", "commit", "rebase", "compare", "check").
 *    done:    bytes processed so far (integer).
 *    total:   bytes the operation will process (integer; the same measure as
 *             the text's percentage: for convert the bytes to copy, not the
 *             disk size).
 *    elapsed: seconds since the operation started, three decimals.
 *    A line is never repeated with the same done and total.
 *
 * Which rendering a command gets (see chooseProgress) — the rule:
 *  1. --progress=json: JSON lines on stderr, no text on stdout; -p not needed
 *     and -q does not silence it (it was asked for by name).
 *  2. --progress=text: same as -p.
 *  3. -p (or --progress=text), not -q: qemu's text on stdout, always, so a
 *     script that captures qemu-img's stdout sees the same bytes. When in
 *     addition stderr is not a terminal but stdout is (a person watches the
 *     text while stderr goes to a log), JSON lines also go to stderr. When
 *     neither stream is a terminal (scripts, tests), the output is exactly
 *     qemu-img's: nothing on stderr.
 *  4. -q: no text progress (as qemu-img).
 */
export class ProgressPrinter {
  private current = 0;
  private lastPrinted = 0;
  private total: number | undefined;
  private done = 0;
  private lastJson: { done: number; total: number } | undefined;

  constructor(
    private readonly write: ((text: string) => void) | undefined,
    private readonly minStep = 1,
    private readonly json?: JsonProgressSink,
  ) {}

  /** Whether anything is printed: a silent printer needs no totals (convert then skips counting). */
  get reporting(): boolean {
    return this.write !== undefined || this.json !== undefined;
  }

  /** Sets the progress to `percent` (0..100). */
  set(percent: number): void {
    this.update(percent, undefined);
  }

  /** Sets the progress as bytes: `done` of `total` (the percentage follows). */
  bytes(done: number, total: number): void {
    this.total = total;
    this.update(total === 0 ? 100 : (100 * done) / total, Math.min(done, total));
  }

  /** Records the total without a text update; the JSON rendering reports done 0 of it. */
  setTotal(total: number): void {
    this.total = total;
    this.done = Math.round((this.current * total) / 100);
    this.printJson();
  }

  end(): void {
    this.write?.('\n');
  }

  /** Adds `delta` percent (qemu_progress_print with max 100). */
  add(delta: number): void {
    this.set(this.current + delta);
  }

  /** Adds `delta` bytes of `total`. */
  addBytes(delta: number, total: number): void {
    this.bytes(Math.min(total, this.done + delta), total);
  }

  private update(percent: number, done: number | undefined): void {
    if (!this.write && !this.json) return;
    this.current = Math.min(100, Math.max(0, percent));
    if (done !== undefined) this.done = done;
    else if (this.total !== undefined) this.done = Math.round((this.current * this.total) / 100);
    if (
      this.current > this.lastPrinted + this.minStep ||
      this.current < this.lastPrinted - this.minStep ||
      this.current === 0 ||
      this.current === 100
    ) {
      this.lastPrinted = this.current;
      this.print();
    }
  }

  private print(): void {
    this.write?.(`    (${cFixed(this.current, 2)}/100%)\r`);
    this.printJson();
  }

  private printJson(): void {
    const json = this.json;
    const total = this.total;
    if (!json || total === undefined) return;
    if (this.lastJson && this.lastJson.done === this.done && this.lastJson.total === total) return;
    this.lastJson = { done: this.done, total };
    const elapsed = Math.max(0, json.now() - json.start) / 1000;
    json.write(`${JSON.stringify({ phase: json.phase, done: this.done, total, elapsed: Number(elapsed.toFixed(3)) })}\n`);
  }
}

/** Where and how the JSON rendering goes. */
export interface JsonProgressSink {
  readonly phase: string;
  readonly write: (line: string) => void;
  /** Milliseconds, a monotonic clock; `start` is its value when the operation began. */
  readonly now: () => number;
  readonly start: number;
}

/** What the command line asked for: -p, -q and --progress=MODE. */
export interface ProgressRequest {
  readonly p: boolean;
  readonly quiet: boolean;
  readonly mode: ProgressMode | undefined;
}

export type ProgressMode = 'text' | 'json';

/** A --progress value; undefined when it is neither "text" nor "json". */
export function parseProgressMode(text: string): ProgressMode | undefined {
  return text === 'text' || text === 'json' ? text : undefined;
}

/** The output streams and whether each is a terminal. */
export interface ProgressStreams {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly stdoutIsTerminal: boolean;
  readonly stderrIsTerminal: boolean;
}

/** Builds the printer the rule in this module's header picks. */
export function chooseProgress(
  request: ProgressRequest,
  streams: ProgressStreams,
  options: { phase: string; minStep?: number; now?: () => number },
): ProgressPrinter {
  const now = options.now ?? monotonicMs;
  const json = (): JsonProgressSink => ({ phase: options.phase, write: streams.stderr, now, start: now() });
  const minStep = options.minStep ?? 1;
  if (request.mode === 'json') return new ProgressPrinter(undefined, minStep, json());
  const text = (request.p || request.mode === 'text') && !request.quiet;
  if (!text) return new ProgressPrinter(undefined, minStep);
  const alsoJson = streams.stdoutIsTerminal && !streams.stderrIsTerminal;
  return new ProgressPrinter(streams.stdout, minStep, alsoJson ? json() : undefined);
}
