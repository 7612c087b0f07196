/**
 * The fault-injecting twin of a host file, for tests: wraps any HostFile and
 *  - records every change (write, zeroing, truncate) and every sync, in order,
 *    so a power cut can be replayed from the log;
 *  - stalls I/O on chosen byte ranges until released;
 *  - fails chosen operations with EIO or ENOSPC.
 * Everything is per instance.
 */
import { VdiskError, type ErrorCode } from '../errors.js';
import type { HostFile } from './host-file.js';

/**
 * One entry of the change log, recorded when the call completes (data is
 * copied when the call starts). A sync entry says which entries it made
 * durable: those before index `covers` (completed before the sync started).
 */
export type HostLogEntry =
  | { readonly kind: 'write'; readonly offset: number; readonly data: Uint8Array }
  /** punchHole / zeroRange: the range reads as zeros afterwards. */
  | { readonly kind: 'zero'; readonly offset: number; readonly length: number }
  | { readonly kind: 'truncate'; readonly length: number }
  | { readonly kind: 'sync'; readonly covers: number };

export type FaultOp = 'read' | 'write' | 'sync' | 'truncate';

/** A failure to inject: ops overlapping [offset, offset+length) fail with `code`. */
export interface FaultRule {
  readonly ops: readonly FaultOp[];
  readonly code: Extract<ErrorCode, 'EIO' | 'ENOSPC'>;
  readonly offset?: number;
  /** Bytes from `offset`; absent = to the end of the file. */
  readonly length?: number;
  /** How many times it fires; absent = always. */
  readonly times?: number;
}

interface Stall {
  readonly ops: readonly FaultOp[];
  readonly offset: number;
  readonly end: number;
  readonly released: Promise<void>;
  /** Operations that have hit the stall so far. */
  hits: number;
}

export class FaultHostFile implements HostFile {
  readonly path: string;
  readonly readOnly: boolean;
  readonly device: boolean;
  /** Every change and sync, in completion order. */
  readonly log: HostLogEntry[] = [];
  readonly #inner: HostFile;
  readonly #stalls = new Set<Stall>();
  readonly #faults: Array<FaultRule & { fired: number }> = [];
  #recording: boolean;

  constructor(inner: HostFile, options: { readonly record?: boolean } = {}) {
    this.#inner = inner;
    this.path = inner.path;
    this.readOnly = inner.readOnly;
    this.device = inner.device ?? false;
    this.#recording = options.record ?? true;
  }

  /** Starts or stops recording changes. */
  setRecording(on: boolean): void {
    this.#recording = on;
  }

  /**
   * Holds every `ops` call overlapping [offset, offset+length) until the
   * returned function is called. `hits()` tells how many calls are held or passed.
   */
  stall(range: { offset: number; length: number }, ops: readonly FaultOp[] = ['read', 'write']): { release: () => void; hits: () => number } {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    const s: Stall = { ops, offset: range.offset, end: range.offset + range.length, released, hits: 0 };
    this.#stalls.add(s);
    return {
      release: () => {
        this.#stalls.delete(s);
        release();
      },
      hits: () => s.hits,
    };
  }

  /** Adds a failure rule. */
  inject(rule: FaultRule): void {
    this.#faults.push({ ...rule, fired: 0 });
  }

  clearFaults(): void {
    this.#faults.length = 0;
  }

  async #gate(op: FaultOp, offset: number, length: number): Promise<void> {
    for (const s of [...this.#stalls]) {
      if (s.ops.includes(op) && offset < s.end && offset + Math.max(1, length) > s.offset) {
        s.hits++;
        await s.released;
      }
    }
    for (const f of this.#faults) {
      if (!f.ops.includes(op) || (f.times !== undefined && f.fired >= f.times)) continue;
      const from = f.offset ?? 0;
      const to = f.length === undefined ? Infinity : from + f.length;
      if (op !== 'sync' && !(offset < to && offset + Math.max(1, length) > from)) continue;
      f.fired++;
      throw new VdiskError(f.code, `'${this.path}': injected ${f.code} on ${op} of ${length} bytes at offset ${offset}`, { file: this.path, offset });
    }
  }

  size(): Promise<number> {
    return this.#inner.size();
  }

  async read(buf: Uint8Array, offset: number): Promise<void> {
    await this.#gate('read', offset, buf.length);
    await this.#inner.read(buf, offset);
  }

  async write(buf: Uint8Array, offset: number): Promise<void> {
    await this.#gate('write', offset, buf.length);
    const data = this.#recording ? buf.slice() : null;
    await this.#inner.write(buf, offset);
    if (data && this.#recording) this.log.push({ kind: 'write', offset, data });
  }

  async writev(bufs: readonly Uint8Array[], offset: number): Promise<void> {
    const total = bufs.reduce((n, b) => n + b.length, 0);
    await this.#gate('write', offset, total);
    if (this.#recording) {
      const data = new Uint8Array(total);
      let pos = 0;
      for (const b of bufs) {
        data.set(b, pos);
        pos += b.length;
      }
      await this.#inner.writev(bufs, offset);
      if (this.#recording) this.log.push({ kind: 'write', offset, data });
      return;
    }
    await this.#inner.writev(bufs, offset);
  }

  async sync(): Promise<void> {
    await this.#gate('sync', 0, 0);
    const covers = this.log.length;
    await this.#inner.sync();
    if (this.#recording) this.log.push({ kind: 'sync', covers });
  }

  async truncate(length: number): Promise<void> {
    await this.#gate('truncate', length, 0);
    await this.#inner.truncate(length);
    if (this.#recording) this.log.push({ kind: 'truncate', length });
  }

  async punchHole(offset: number, length: number): Promise<boolean> {
    await this.#gate('write', offset, length);
    const ok = await this.#inner.punchHole(offset, length);
    if (ok && this.#recording) this.log.push({ kind: 'zero', offset, length });
    return ok;
  }

  async zeroRange(offset: number, length: number): Promise<boolean> {
    await this.#gate('write', offset, length);
    const ok = await this.#inner.zeroRange(offset, length);
    if (ok && this.#recording) this.log.push({ kind: 'zero', offset, length });
    return ok;
  }

  async allocate(offset: number, length: number): Promise<boolean> {
    await this.#gate('write', offset, length);
    return this.#inner.allocate(offset, length);
  }

  seekData(offset: number): Promise<number | null> {
    return this.#inner.seekData(offset);
  }

  seekHole(offset: number): Promise<number> {
    return this.#inner.seekHole(offset);
  }

  allocatedSize(): Promise<number> {
    return this.#inner.allocatedSize();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}
