/**
 * Requests to the kernel through an io_uring of the addon's (native/host_ring.c)
 * instead of libuv's thread pool: for O_DIRECT files, where every request is a
 * trip to the device and the pool's per-request cost (two thread wake-ups and a
 * completion hop, ~30 µs on 2 vCPUs) was the bound. The requests issued in
 * one turn of the event loop go to the kernel in one syscall; the completions
 * of a burst arrive in one callback.
 *
 * Buffers handed to `read` / `write` must stay alive and unmoved until the
 * returned promise settles: the kernel writes into them after the call returns.
 * DirectHostFile's bounce buffers (WebAssembly memory, never detached) are.
 */
import { constants as osConstants } from 'node:os';
import { nativeHost, type NativeRing } from './native.js';

/** Requests the ring holds at once; more wait in a queue here. */
const RING_ENTRIES = 64;
/** ringSubmit flag: queue only; the next ringEnter submits the batch. */
const SUBMIT_DEFER = 1;
/** ringSubmit flag: straight to io_uring's kernel workers, not tried in io_uring_enter first. */
const SUBMIT_ASYNC = 2;

const enum Op {
  Read = 0,
  Write = 1,
  Datasync = 2,
}

type Resolve = (result: number) => void;
type Reject = (e: Error) => void;

/** A request waiting for a free tag. */
interface Queued {
  readonly op: Op;
  readonly fd: number;
  readonly buf: Uint8Array | null;
  readonly offset: number;
  readonly flags: number;
  readonly resolve: Resolve;
  readonly reject: Reject;
}

/** errno number → name, for errors that look like Node's own (`code: 'EIO'`). */
let errnoNames: Map<number, string> | undefined;

function errnoName(errno: number): string {
  errnoNames ??= new Map(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));
  return errnoNames.get(errno) ?? 'EIO';
}

/** A failed request: `code` is the errno name, as Node's fs errors carry it. */
export class HostRingError extends Error {
  readonly code: string;
  constructor(errno: number, what: string) {
    const code = errnoName(errno);
    super(`${code}: ${what} failed (errno ${errno})`);
    this.code = code;
  }
}

export class HostRing {
  readonly #native: NativeRing;
  readonly #handle: object;
  /** (tag, result) pairs the addon fills before each completion callback. */
  readonly #results: Int32Array;
  /** The promise of each tag in flight, as two arrays: no object per request (this runs for every guest request). */
  readonly #resolves: (Resolve | undefined)[] = new Array<Resolve | undefined>(RING_ENTRIES).fill(undefined);
  readonly #rejects: (Reject | undefined)[] = new Array<Reject | undefined>(RING_ENTRIES).fill(undefined);
  readonly #freeTags: number[] = [];
  readonly #queue: Queued[] = [];
  #inFlight = 0;
  /** Tags queued in the ring but not yet submitted, oldest first. */
  #unsubmitted: number[] = [];
  #enterScheduled = false;
  readonly #enterSoon = (): void => this.#enter();
  /** What #capture took from the promise made last (read right after `new Promise`). */
  readonly #captured: { resolve: Resolve; reject: Reject } = { resolve: () => undefined, reject: () => undefined };
  readonly #capture = (resolve: Resolve, reject: Reject): void => {
    this.#captured.resolve = resolve;
    this.#captured.reject = reject;
  };
  #closed = false;
  #drained: (() => void) | null = null;

  private constructor(native: NativeRing, handle: object, results: Int32Array, tags: number) {
    this.#native = native;
    this.#handle = handle;
    this.#results = results;
    for (let t = tags - 1; t >= 0; t--) this.#freeTags.push(t);
  }

  /**
   * A ring, or null where there is none: no addon, a kernel without io_uring
   * (or with it disabled), or VDISK_NO_RING=1 (to measure the thread pool).
   * `polled`: a kernel thread takes requests off the queue, so submitting costs
   * no syscall (null where such a thread is not allowed). `spinMicros`: before
   * the event loop would sleep with requests in flight, watch the completion
   * queue for up to this long (adapted to how fast completions come; 0: never).
   * `maxInFlight`: requests the kernel holds at once (more wait here); each
   * request sent to io_uring's workers may take a kernel thread of its own.
   */
  static open(options: { readonly polled?: boolean; readonly spinMicros?: number; readonly maxInFlight?: number } = {}): HostRing | null {
    if (process.env['VDISK_NO_RING'] === '1') return null;
    const native = nativeHost();
    if (!native?.ringOpen || !native.ringSubmit || !native.ringEnter || !native.ringClose) return null;
    const ringNative: NativeRing = { ringOpen: native.ringOpen, ringSubmit: native.ringSubmit, ringEnter: native.ringEnter, ringClose: native.ringClose };
    // The completion queue holds twice the ring's entries; a callback reports at most that many.
    const results = new Int32Array(2 * 2 * RING_ENTRIES);
    let self: HostRing | null = null;
    const handle = ringNative.ringOpen(
      RING_ENTRIES,
      results,
      (count) => {
        if (self !== null) self.#complete(count);
      },
      options.polled ?? false,
      options.spinMicros ?? 0,
    );
    if (handle === null) return null;
    self = new HostRing(ringNative, handle, results, Math.max(1, Math.min(RING_ENTRIES, options.maxInFlight ?? RING_ENTRIES)));
    return self;
  }

  /** Requests submitted or queued and not completed. */
  get inFlight(): number {
    return this.#inFlight + this.#queue.length;
  }

  /**
   * Bytes read into `buf` from `offset` (short at the end of the file).
   * `onWorker`: the read runs on one of io_uring's kernel threads, not in the
   * submitting syscall, so a page-cache copy leaves the JS thread.
   */
  read(fd: number, buf: Uint8Array, offset: number, onWorker = false): Promise<number> {
    return this.#request(Op.Read, fd, buf, offset, onWorker ? SUBMIT_DEFER | SUBMIT_ASYNC : SUBMIT_DEFER);
  }

  /** Bytes written from `buf` at `offset`. */
  write(fd: number, buf: Uint8Array, offset: number): Promise<number> {
    return this.#request(Op.Write, fd, buf, offset, SUBMIT_DEFER);
  }

  async datasync(fd: number): Promise<void> {
    await this.#request(Op.Datasync, fd, null, 0, SUBMIT_DEFER);
  }

  /** Waits for the requests in flight, then releases the ring. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#inFlight > 0 || this.#queue.length > 0) await new Promise<void>((r) => (this.#drained = r));
    this.#native.ringClose(this.#handle);
  }

  #request(op: Op, fd: number, buf: Uint8Array | null, offset: number, flags: number): Promise<number> {
    if (this.#closed) {
      return Promise.reject(new HostRingError(osConstants.errno.EBADF, 'request on a closed host ring'));
    }
    // One executor for every request (it only hands out the functions): no closure per request.
    const promise = new Promise<number>(this.#capture);
    const resolve = this.#captured.resolve;
    const reject = this.#captured.reject;
    if (this.#freeTags.length === 0) this.#queue.push({ op, fd, buf, offset, flags, resolve, reject });
    else this.#submit(op, fd, buf, offset, flags, resolve, reject);
    return promise;
  }

  #submit(op: Op, fd: number, buf: Uint8Array | null, offset: number, flags: number, resolve: Resolve, reject: Reject): void {
    const tag = this.#freeTags.pop();
    if (tag === undefined) {
      this.#queue.push({ op, fd, buf, offset, flags, resolve, reject });
      return;
    }
    try {
      this.#native.ringSubmit(this.#handle, op, fd, buf, offset, tag, flags);
    } catch (e) {
      this.#freeTags.push(tag);
      reject(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    this.#resolves[tag] = resolve;
    this.#rejects[tag] = reject;
    this.#inFlight++;
    this.#unsubmitted.push(tag);
    if (!this.#enterScheduled) {
      // At the end of this turn of the event loop: every request issued in it,
      // including those issued by promise callbacks several hops later (a qcow2
      // write waiting for its cluster's placement), goes to the kernel in one
      // syscall, where the block layer merges the neighbours. (process.nextTick
      // ran before those callbacks and split the burst: a depth-16 stream of
      // 4 KiB writes made 28,000-37,000 device writes instead of 19,500-26,000.)
      this.#enterScheduled = true;
      setImmediate(this.#enterSoon);
    }
  }

  #enter(): void {
    this.#enterScheduled = false;
    if (this.#unsubmitted.length === 0) return;
    if (this.#inFlight === 0) {
      // Completed already (a polling ring's kernel thread took them): nothing left to submit.
      this.#unsubmitted = [];
      return;
    }
    const taken = this.#native.ringEnter(this.#handle);
    if (taken >= 0) {
      // Not splice: it makes an array of what it removes, on every submission.
      const left = this.#unsubmitted.length - taken;
      if (left > 0) this.#unsubmitted.copyWithin(0, taken);
      this.#unsubmitted.length = Math.max(0, left);
      if (left > 0 && !this.#enterScheduled) {
        this.#enterScheduled = true;
        setImmediate(this.#enterSoon);
      }
      return;
    }
    // The kernel took none of them and they were dropped from the ring: fail them.
    const dropped = this.#unsubmitted;
    this.#unsubmitted = [];
    for (const tag of dropped) {
      const reject = this.#rejects[tag];
      this.#settle(tag);
      reject?.(new HostRingError(-taken, 'io_uring_enter'));
    }
    this.#drainQueue();
  }

  #complete(count: number): void {
    const results = this.#results;
    for (let i = 0; i < count; i++) {
      const tag = results[2 * i] ?? -1;
      const result = results[2 * i + 1] ?? 0;
      const resolve = this.#resolves[tag];
      const reject = this.#rejects[tag];
      if (resolve === undefined || reject === undefined) continue;
      this.#settle(tag);
      if (result < 0) reject(new HostRingError(-result, 'io_uring request'));
      else resolve(result);
    }
    this.#drainQueue();
  }

  /** Frees the tag of a request that ended. */
  #settle(tag: number): void {
    this.#resolves[tag] = undefined;
    this.#rejects[tag] = undefined;
    this.#freeTags.push(tag);
    this.#inFlight--;
  }

  /** Submits waiting requests into freed slots; settles `close` once all are done. */
  #drainQueue(): void {
    while (this.#queue.length > 0 && this.#freeTags.length > 0) {
      const q = this.#queue.shift();
      if (q) this.#submit(q.op, q.fd, q.buf, q.offset, q.flags, q.resolve, q.reject);
    }
    if (this.#inFlight === 0 && this.#queue.length === 0 && this.#drained !== null) {
      const drained = this.#drained;
      this.#drained = null;
      drained();
    }
  }
}
