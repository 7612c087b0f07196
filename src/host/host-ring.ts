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
import { fdatasyncFd, preadFd, pwriteFd } from './fs-calls.js';
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

/**
 * Results with which the kernel hands a request back without running it, so
 * it is run again on libuv's thread pool. ECANCELED: io_uring could not start
 * a worker thread for a request it had to hand to one (an O_DIRECT write that
 * extends the file or fills a hole) because the thread creation met a signal
 * three times, or RLIMIT_NPROC; seen here at one run in six under
 * `node --cpu-prof --cpu-prof-interval 20`, on the first write into a sparse
 * file. EINTR and EAGAIN: the request met a signal or found the device busy
 * (QEMU's io_uring code submits those again as well). The pool, not the ring,
 * because a ring that cannot start workers may fail the same way again.
 */
const RUN_AGAIN = new Set([-osConstants.errno.ECANCELED, -osConstants.errno.EINTR, -osConstants.errno.EAGAIN]);

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
  /** What each tag in flight asked for, to run it again on the thread pool (see RUN_AGAIN). */
  readonly #ops = new Uint8Array(RING_ENTRIES);
  readonly #fds = new Int32Array(RING_ENTRIES);
  readonly #offsets = new Float64Array(RING_ENTRIES);
  readonly #bufs: (Uint8Array | null)[] = new Array<Uint8Array | null>(RING_ENTRIES).fill(null);
  /** Requests the kernel handed back, running again on the thread pool. */
  #onPool = 0;
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
   * `cooperative`: a completion waits for the JS thread's next syscall instead
   * of interrupting it (IORING_SETUP_COOP_TASKRUN; see ring_init in
   * native/host_ring.c); a kernel without it gets a plain ring.
   * `maxInFlight`: requests the kernel holds at once (more wait here); each
   * request sent to io_uring's workers may take a kernel thread of its own.
   * `native`: the addon's ring calls, or a stand-in (tests).
   */
  static open(
    options: { readonly polled?: boolean; readonly spinMicros?: number; readonly cooperative?: boolean; readonly maxInFlight?: number; readonly native?: NativeRing } = {},
  ): HostRing | null {
    if (process.env['VDISK_NO_RING'] === '1') return null;
    const ringNative = options.native ?? HostRing.#addonRing();
    if (ringNative === null) return null;
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
      options.cooperative ?? false,
    );
    if (handle === null) return null;
    self = new HostRing(ringNative, handle, results, Math.max(1, Math.min(RING_ENTRIES, options.maxInFlight ?? RING_ENTRIES)));
    return self;
  }

  static #addonRing(): NativeRing | null {
    const native = nativeHost();
    if (!native?.ringOpen || !native.ringSubmit || !native.ringEnter || !native.ringClose) return null;
    const ring: NativeRing = { ringOpen: native.ringOpen, ringSubmit: native.ringSubmit, ringEnter: native.ringEnter, ringClose: native.ringClose };
    return native.ringWaits ? { ...ring, ringWaits: native.ringWaits } : ring;
  }

  /** Requests submitted or queued and not completed. */
  get inFlight(): number {
    return this.#inFlight + this.#queue.length + this.#onPool;
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

  /**
   * How the ring waits for its completions, where it watches its queue at all
   * (`spinMicros`): watching now or sleeping, and each way's mean time from one
   * completion to the next over its last measured block (null: not measured yet),
   * and whether the ring is cooperative. Null without the addon's measure (an
   * older addon, a stand-in).
   */
  waits(): { readonly watching: boolean; readonly watchMicros: number | null; readonly sleepMicros: number | null; readonly cooperative: boolean } | null {
    const w = this.#closed ? undefined : this.#native.ringWaits?.(this.#handle);
    if (w === undefined) return null;
    const micros = (ns: number): number | null => (ns === 0 ? null : ns / 1000);
    return { watching: w[0] === 1, watchMicros: micros(w[1]), sleepMicros: micros(w[2]), cooperative: w[3] === 1 };
  }

  /** Waits for the requests in flight, then releases the ring. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.inFlight > 0) await new Promise<void>((r) => (this.#drained = r));
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
    this.#ops[tag] = op;
    this.#fds[tag] = fd;
    this.#offsets[tag] = offset;
    this.#bufs[tag] = buf;
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
    // The kernel took none of them and they were dropped from the ring: fail them (or run them on the pool).
    const dropped = this.#unsubmitted;
    this.#unsubmitted = [];
    const again = RUN_AGAIN.has(taken);
    for (const tag of dropped) {
      const resolve = this.#resolves[tag];
      const reject = this.#rejects[tag];
      if (resolve === undefined || reject === undefined) continue;
      if (again) this.#runOnPool(tag, resolve, reject);
      this.#settle(tag);
      if (!again) reject(new HostRingError(-taken, 'io_uring_enter'));
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
      // Before #settle, which frees the tag's record of the request.
      const again = result < 0 && RUN_AGAIN.has(result);
      if (again) this.#runOnPool(tag, resolve, reject);
      this.#settle(tag);
      if (again) continue;
      if (result < 0) reject(new HostRingError(-result, 'io_uring request'));
      else resolve(result);
    }
    this.#drainQueue();
  }

  /** Runs the request of `tag` again through libuv's thread pool (see RUN_AGAIN); its caller keeps the buffer until it settles. */
  #runOnPool(tag: number, resolve: Resolve, reject: Reject): void {
    const fd = this.#fds[tag] ?? -1;
    const offset = this.#offsets[tag] ?? 0;
    const buf = this.#bufs[tag] ?? null;
    const op = this.#ops[tag];
    const run =
      op === Op.Datasync || buf === null
        ? fdatasyncFd(fd).then(() => 0)
        : op === Op.Write
          ? pwriteFd(fd, buf, 0, buf.length, offset)
          : preadFd(fd, buf, 0, buf.length, offset);
    this.#onPool++;
    const ended = (): void => {
      this.#onPool--;
      this.#drainQueue();
    };
    run.then(
      (n) => {
        ended();
        resolve(n);
      },
      (e: unknown) => {
        ended();
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  }

  /** Frees the tag of a request that ended. */
  #settle(tag: number): void {
    this.#resolves[tag] = undefined;
    this.#rejects[tag] = undefined;
    this.#bufs[tag] = null;
    this.#freeTags.push(tag);
    this.#inFlight--;
  }

  /** Submits waiting requests into freed slots; settles `close` once all are done. */
  #drainQueue(): void {
    while (this.#queue.length > 0 && this.#freeTags.length > 0) {
      const q = this.#queue.shift();
      if (q) this.#submit(q.op, q.fd, q.buf, q.offset, q.flags, q.resolve, q.reject);
    }
    if (this.inFlight === 0 && this.#drained !== null) {
      const drained = this.#drained;
      this.#drained = null;
      drained();
    }
  }
}
