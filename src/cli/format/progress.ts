import { cFixed } from './size-text.js';

/**
 * qemu-img's -p progress (util/qemu-progress.c): "    (12.50/100%)\r" on
 * stdout, printed at 0, whenever the value moved by more than the minimum
 * step, and at 100; the end is a bare newline (progress_simple_end).
 */
export class ProgressPrinter {
  private current = 0;
  private lastPrinted = 0;

  constructor(
    private readonly write: ((text: string) => void) | undefined,
    private readonly minStep = 1,
  ) {}

  /** Sets the progress to `percent` (0..100). */
  set(percent: number): void {
    if (!this.write) return;
    this.current = Math.min(100, Math.max(0, percent));
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

  end(): void {
    this.write?.('\n');
  }

  /** Adds `delta` percent (qemu_progress_print with max 100). */
  add(delta: number): void {
    this.set(this.current + delta);
  }

  private print(): void {
    this.write?.(`    (${cFixed(this.current, 2)}/100%)\r`);
  }
}
