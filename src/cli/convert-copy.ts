/**
 * The copy loop of `vdisk convert`: block status decides what each range of the
 * sources becomes (data to read, zeros to write, or nothing), and a bounded pool
 * of workers copies the ranges in chunks. Like qemu-img's convert coroutines
 * (`-m N`, default 8), reads of several chunks overlap; without `-W` each write
 * starts only when the write of the chunk before it has completed, so the target
 * is written in disk order; with `-W` writes complete in any order.
 *
 * Holes of the source are never read, and a fresh target is never pre-zeroed.
 */
import type { GuestCopyRun, ImageNode } from '../block/types.js';
import { HostCopyError } from '../host/host-file.js';
import { hugePageBytes } from '../host/huge-pages.js';
import { bufferView, isZeroRange } from '../util/zeros.js';
import { VdiskError, isVdiskError } from '../errors.js';
import { ioFailureText } from './errors-text.js';
import { CopyError, copyBetweenHosts } from '../jobs/copy.js';
import type { ProgressPrinter } from './format/progress.js';

/** Largest request one copy step reads and writes (qemu-img's 2 MiB buffer). */
const CHUNK = 2 * 1024 * 1024;

/** What the copy needs to know of the command line. */
export interface CopySettings {
  /** Bytes of zeros that make a hole in the target (-S); 0 writes everything. */
  readonly sparseSize: number;
  readonly compress: boolean;
  /** The target has a backing file (-B): ranges the sources leave unallocated stay unallocated. */
  readonly hasBacking: boolean;
  /** The target reads as zeros before the copy (fresh, or --target-is-zero). */
  readonly targetZeroed: boolean;
  /** Parallel requests (-m), 1..16. */
  readonly parallel: number;
  /** Out-of-order writes allowed (-W). */
  readonly outOfOrder: boolean;
  /**
   * -C: data goes from the source's host file to the target's inside the kernel
   * (copy_file_range) where both allow it, unseen, so with no zero detection;
   * the rest (and everything once the target refuses) through memory.
   */
  readonly copyOffload: boolean;
}

export interface CopyJob {
  readonly sources: readonly ImageNode[];
  readonly target: ImageNode;
  readonly settings: CopySettings;
  readonly progress: ProgressPrinter;
}

/** What one range of a source becomes in the target. */
type Plan = 'data' | 'zero' | 'skip';

/** One unit of work for a copy worker, numbered in disk order. */
interface Chunk {
  readonly seq: number;
  readonly source: ImageNode;
  /** Offset in the source. */
  readonly offset: number;
  /** Offset in the target. */
  readonly targetOffset: number;
  readonly length: number;
  readonly plan: 'data' | 'zero';
}

function planFor(
  x: { readonly present?: boolean; readonly allocated?: boolean; readonly zero: boolean; readonly data: boolean },
  settings: CopySettings,
): Plan {
  const present = x.present ?? x.allocated ?? true;
  if (settings.hasBacking && !present) return 'skip'; // the target's backing provides it
  if (x.zero || !x.data) return settings.targetZeroed ? 'skip' : 'zero';
  return 'data';
}

/** The most block status asks for at once. */
const STATUS_WINDOW = 2 ** 32;

async function statusOf(src: ImageNode, settings: CopySettings, off: number, window = STATUS_WINDOW): Promise<Array<{ length: number; plan: Plan }>> {
  const len = Math.min(src.length - off, window);
  const extents = settings.hasBacking ? await src.layerStatus(off, len) : await src.blockStatus(off, len);
  const out = extents.map((x) => ({ length: x.length, plan: planFor(x, settings) }));
  if (out.reduce((a, s) => a + s.length, 0) <= 0) {
    throw new VdiskError('EIO', `block status of '${src.filename}' returned nothing at ${off}`, { file: src.filename, offset: off });
  }
  return out;
}

/** The chunks of the whole copy, in disk order, produced lazily from block status. */
async function* chunksOf(job: CopyJob): AsyncGenerator<Chunk> {
  const { settings, target } = job;
  const clusterSize = target.clusterSize ?? 65536;
  let seq = 0;
  let base = 0;
  for (const source of job.sources) {
    // The copy starts with the first chunk: ask for a little block status first (a raw
    // source's whole 4 GiB of 1 MiB extents took 40 ms to list), then more and more.
    let window = 64 * 1024 * 1024;
    for (let pos = 0; pos < source.length; window = Math.min(STATUS_WINDOW, window * 2)) {
      for (const s of await statusOf(source, settings, pos, window)) {
        const start = pos;
        pos += s.length;
        if (s.plan === 'skip') continue;
        for (let off = start; off < start + s.length; ) {
          // Compressed output goes cluster by cluster, aligned in the target.
          const limit = settings.compress ? clusterSize - ((base + off) % clusterSize) : CHUNK;
          const length = Math.min(limit, start + s.length - off);
          yield { seq: seq++, source, offset: off, targetOffset: base + off, length, plan: s.plan };
          off += length;
        }
      }
    }
    base += source.length;
  }
}

/** The bytes the copy will write: qemu-img's progress counts these, not the disk size. */
async function bytesToCopy(job: CopyJob): Promise<number> {
  let total = 0;
  for (const src of job.sources) {
    for (let pos = 0; pos < src.length; ) {
      for (const s of await statusOf(src, job.settings, pos)) {
        pos += s.length;
        if (s.plan !== 'skip') total += s.length;
      }
    }
  }
  return total;
}

/**
 * Lets writes start in sequence order: `turn(seq)` resolves once every chunk
 * before `seq` has been written. A failure releases every waiter (they then see
 * `failed` and stop).
 */
class WriteOrder {
  private next = 0;
  private readonly waiting = new Map<number, () => void>();
  failed = false;

  turn(seq: number): Promise<void> {
    if (seq === this.next || this.failed) return Promise.resolve();
    return new Promise((resolve) => this.waiting.set(seq, resolve));
  }

  written(seq: number): void {
    this.next = seq + 1;
    const wake = this.waiting.get(this.next);
    this.waiting.delete(this.next);
    wake?.();
  }

  fail(): void {
    this.failed = true;
    for (const wake of this.waiting.values()) wake();
    this.waiting.clear();
  }
}

/**
 * Source bytes handed to the target's bulk copy at once. The copy starts once
 * the first batch is listed, and reads overlap writes only inside a batch (the
 * engine drains between two), so batches start at one bulk part and grow eightfold up
 * to a limit: an eighth of the copy, between one chunk and 64 MiB, when
 * progress is shown (it moves between batches; qemu-img's -p moves per 2 MiB
 * chunk, and the first and last lines are the same), else 1 GiB. A quick
 * 256 MiB half-data convert into raw took 0.18-0.22 s in 50 batches, 0.15-0.18 s
 * in 8; a 4 GiB one into qcow2 waited 70 ms for a first 64 MiB batch to be
 * listed and read. The engine's buffers are reused from one batch to the next.
 */
class BulkBatches {
  private limit: number;
  private readonly max: number;

  constructor(total: number | undefined) {
    this.max = total === undefined ? 1024 * 1024 * 1024 : Math.min(64 * 1024 * 1024, Math.max(CHUNK, Math.ceil(total / 8)));
    this.limit = Math.min(this.max, 8 * 1024 * 1024);
  }

  /** The bytes the current batch may reach. */
  get bytes(): number {
    return this.limit;
  }

  /** A batch went out: the next may be eight times as large. */
  next(): void {
    this.limit = Math.min(this.max, this.limit * 8);
  }
}

/** Lets I/O completions run: listing a source takes no turn of the event loop on its own (its calls are synchronous). */
function yieldToIo(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Whether the target can take the data in bulk (writeRunsFromHost: a raw or
 * qcow2 target copied into on threads of the addon, zero blocks left out): a fresh
 * target, holes kept (-S), no compression, no backing, no -C.
 * VDISK_NO_BULK_COPY=1 turns it off.
 */
function bulkEligible(job: CopyJob): boolean {
  const s = job.settings;
  return (
    job.target.writeRunsFromHost !== undefined &&
    s.targetZeroed &&
    s.sparseSize > 0 &&
    !s.compress &&
    !s.hasBacking &&
    !s.copyOffload &&
    process.env['VDISK_NO_BULK_COPY'] !== '1'
  );
}

/**
 * Copies what it can of the job in bulk: the data the sources hold as plain
 * host ranges goes to the target's writeRunsFromHost in batches. Returns the
 * chunks left for the copy loop (ranges that are not plain host data, such as
 * compressed clusters; everything once the target declines), numbered anew
 * in disk order, and the bytes done.
 */
async function copyInBulk(job: CopyJob, total: number | undefined): Promise<{ rest: Chunk[]; done: number }> {
  const target = job.target;
  const rest: Chunk[] = [];
  let runs: GuestCopyRun[] = [];
  let batched: Chunk[] = [];
  let batchBytes = 0;
  const batches = new BulkBatches(total);
  let done = 0;
  let on = true;
  // One batch is copied while the next is listed.
  let inFlight: Promise<void> = Promise.resolve();
  const flush = async (): Promise<void> => {
    await inFlight;
    if (runs.length === 0) return;
    const batch = { runs, chunks: batched, bytes: batchBytes };
    runs = [];
    batched = [];
    batchBytes = 0;
    batches.next();
    inFlight = copyBatch(batch);
    // Settled by the next flush; a failure must not go unhandled meanwhile.
    inFlight.catch(() => undefined);
  };
  const copyBatch = async (batch: { runs: GuestCopyRun[]; chunks: Chunk[]; bytes: number }): Promise<void> => {
    if (!on) {
      rest.push(...batch.chunks);
      return;
    }
    let written: number | null;
    try {
      written = (await target.writeRunsFromHost?.(batch.runs, job.settings.sparseSize)) ?? null;
    } catch (e) {
      if (e instanceof HostCopyError) {
        const what = e.side === 'read' ? 'reading' : 'writing';
        throw new VdiskError('EIO', `error while ${what} at byte ${e.at}: ${ioFailureText(e)}`, { offset: e.at }, { cause: e });
      }
      const at = batch.runs[0]?.offset ?? 0;
      throw new VdiskError('EIO', `error while writing at byte ${at}: ${ioFailureText(e)}`, { offset: at }, { cause: e });
    }
    if (written === null) {
      // The target declined (nothing written): this batch and the rest go through the copy loop.
      on = false;
      rest.push(...batch.chunks);
    } else {
      done += batch.bytes;
      if (total !== undefined) job.progress.bytes(done, total);
    }
  };
  // A batch ends between clusters of the target: a format with clusters writes them whole.
  const unit = target.clusterSize ?? 1;
  let batchEnd = 0;
  let sinceYield = 0;
  try {
    for await (const chunk of chunksOf(job)) {
      if (batchBytes >= batches.bytes && Math.ceil(batchEnd / unit) <= Math.floor(chunk.targetOffset / unit)) await flush();
      else if (++sinceYield % 32 === 0) await yieldToIo();
      if (!on || chunk.plan !== 'data' || chunk.source.copyViaHost === undefined) {
        rest.push(chunk);
        continue;
      }
      const shift = chunk.targetOffset - chunk.offset;
      const taken: GuestCopyRun[] = [];
      const copied = await chunk.source.copyViaHost(chunk.offset, chunk.length, async (at, src) => {
        taken.push({ offset: at + shift, src });
        return true;
      });
      if (copied > 0) {
        runs.push(...taken);
        batched.push({ ...chunk, length: copied });
        batchBytes += copied;
        batchEnd = chunk.targetOffset + copied;
      }
      if (copied < chunk.length) rest.push({ ...chunk, offset: chunk.offset + copied, targetOffset: chunk.targetOffset + copied, length: chunk.length - copied });
    }
    await flush();
  } finally {
    // The engine's threads use the files' descriptors: never let the caller close them under it.
    await inFlight.catch(() => undefined);
  }
  await inFlight;
  rest.sort((a, b) => a.seq - b.seq || a.offset - b.offset);
  return { rest: rest.map((c, seq) => ({ ...c, seq })), done };
}

/** The chunks of a list, as the copy loop takes them. */
async function* listed(chunks: readonly Chunk[]): AsyncGenerator<Chunk> {
  yield* chunks;
}

/** Copies every source into the target (concatenated), `settings.parallel` chunks at a time. */
export async function copyAll(job: CopyJob): Promise<void> {
  const { settings, target } = job;
  // The total only serves the progress (qemu-img counts it before copying, always).
  const toCopy = job.progress.reporting ? await bytesToCopy(job) : undefined;
  if (toCopy !== undefined) job.progress.setTotal(toCopy);
  const clusterSize = target.clusterSize ?? 65536;
  let done = 0;
  let chunks: AsyncGenerator<Chunk>;
  if (bulkEligible(job)) {
    const bulk = await copyInBulk(job, toCopy);
    done = bulk.done;
    chunks = listed(bulk.rest);
  } else chunks = chunksOf(job);
  // Compressed clusters are packed in the order they are written: keep that order
  // (and so the output) deterministic even with -W.
  const order = settings.outOfOrder && !settings.compress ? undefined : new WriteOrder();
  let failure: unknown;
  // Async generators queue concurrent next() calls, so workers can share one.
  const nextChunk = (): Promise<IteratorResult<Chunk>> => chunks.next();

  const offload = { on: settings.copyOffload && target.writeFromHost !== undefined };
  const worker = async (): Promise<void> => {
    // Page-aligned, as the kernel copies to and from the page cache faster (see util/page-aligned.ts),
    // and on huge pages (see host/huge-pages.ts). Made at a worker's first chunk: after a bulk copy
    // there is often none, and eight idle 2 MiB buffers cost a convert two garbage collections.
    let buffer: Uint8Array | null = null;
    for (;;) {
      if (failure !== undefined) return;
      const step = await nextChunk();
      if (step.done === true) return;
      const chunk = step.value;
      buffer ??= hugePageBytes(settings.compress ? clusterSize : CHUNK);
      const viaKernel = chunk.plan === 'data' && offload.on && chunk.source.copyViaHost !== undefined;
      if (chunk.plan === 'data' && !viaKernel) await readChunk(chunk, buffer);
      await order?.turn(chunk.seq);
      if (failure !== undefined || order?.failed === true) return;
      if (chunk.plan === 'zero') await writeZeroesAt(target, chunk.targetOffset, chunk.length, settings.sparseSize === 0);
      else {
        // What the kernel did not copy goes through memory, in this chunk's turn.
        const copied = viaKernel ? await copyInKernel(chunk, target, offload) : 0;
        if (copied < chunk.length) {
          const rest: Chunk = { ...chunk, offset: chunk.offset + copied, targetOffset: chunk.targetOffset + copied, length: chunk.length - copied };
          if (viaKernel) await readChunk(rest, buffer);
          await writeData(target, rest.targetOffset, buffer.subarray(0, rest.length), { ...settings, clusterSize });
        }
      }
      order?.written(chunk.seq);
      done += chunk.length;
      if (toCopy !== undefined) job.progress.bytes(done, toCopy);
    }
  };

  const guarded = async (): Promise<void> => {
    try {
      await worker();
    } catch (e) {
      failure ??= e;
      order?.fail();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, settings.parallel) }, guarded));
  if (failure !== undefined) throw failure;
  if (toCopy === 0) job.progress.bytes(0, 0);
}

async function readChunk(chunk: Chunk, buffer: Uint8Array): Promise<void> {
  try {
    await chunk.source.read(chunk.offset, buffer.subarray(0, chunk.length));
  } catch (e) {
    throw new VdiskError('EIO', `error while reading at byte ${chunk.targetOffset}: ${ioFailureText(e)}`, { offset: chunk.targetOffset }, { cause: e });
  }
}

/**
 * Copies what it can of a data chunk between the host files (-C): the bytes
 * copied, a prefix of the chunk. A target that refuses a range turns the
 * kernel path off for the rest of the copy (`offload.on`).
 */
async function copyInKernel(chunk: Chunk, target: ImageNode, offload: { on: boolean }): Promise<number> {
  try {
    const { copied, refused } = await copyBetweenHosts(chunk.source, target, {
      offset: chunk.offset,
      length: chunk.length,
      shift: chunk.targetOffset - chunk.offset,
    });
    if (refused) offload.on = false;
    return copied;
  } catch (e) {
    const cause = e instanceof CopyError && e.cause !== undefined ? e.cause : e;
    const what = e instanceof CopyError && e.operation === 'read' ? 'reading' : 'writing';
    throw new VdiskError('EIO', `error while ${what} at byte ${chunk.targetOffset}: ${ioFailureText(cause)}`, { offset: chunk.targetOffset }, { cause });
  }
}

/**
 * Where a data run that reaches `from` (a block boundary) ends at the latest:
 * the first following block starting with a zero byte (it may be a hole), or
 * the end of the buffer. A tight loop over one byte per block.
 */
function dataRunEnd(buf: Uint8Array, from: number, blockSize: number): number {
  let j = from;
  while (j < buf.length && buf[j] !== 0) j += blockSize;
  return Math.min(j, buf.length);
}

async function writeZeroesAt(target: ImageNode, offset: number, length: number, allocate: boolean): Promise<void> {
  try {
    if (allocate) await target.write(offset, new Uint8Array(length));
    else await target.writeZeroes(offset, length, { mayUnmap: true });
  } catch (e) {
    throw new VdiskError('EIO', `error while writing at byte ${offset}: ${ioFailureText(e)}`, { offset }, { cause: e });
  }
}

/**
 * Writes one buffer, leaving holes where it holds `sparseSize`-sized, aligned runs
 * of zeros: a fresh target already reads zeros there; an old one gets them zeroed.
 */
async function writeData(
  target: ImageNode,
  offset: number,
  buf: Uint8Array,
  opts: { readonly sparseSize: number; readonly targetZeroed: boolean; readonly compress: boolean; readonly clusterSize: number },
): Promise<void> {
  try {
    if (opts.compress) {
      if (isZeroRange(bufferView(buf), 0, buf.length)) {
        if (!opts.targetZeroed) await target.writeZeroes(offset, buf.length, { mayUnmap: true });
        return;
      }
      if (buf.length === opts.clusterSize && offset % opts.clusterSize === 0) await target.writeCompressed(offset, buf);
      else await target.write(offset, buf);
      return;
    }
    if (opts.sparseSize === 0) {
      await target.write(offset, buf);
      return;
    }
    // Walk the buffer in sparse-size steps aligned to the disk, grouping runs of data and of zeros.
    const bytes = bufferView(buf);
    let runStart = 0;
    let runZero: boolean | undefined;
    const flush = async (end: number): Promise<void> => {
      if (end <= runStart || runZero === undefined) return;
      if (runZero) {
        if (!opts.targetZeroed) await target.writeZeroes(offset + runStart, end - runStart, { mayUnmap: true });
      } else await target.write(offset + runStart, buf.subarray(runStart, end));
    };
    const sparse = opts.sparseSize;
    for (let i = 0; i < buf.length; ) {
      const blockEnd = Math.min(i + sparse - ((offset + i) % sparse), buf.length);
      // A block whose first byte is not zero is data: decided without a call (the common case).
      const zero = buf[i] === 0 && isZeroRange(bytes, i, blockEnd);
      if (zero !== runZero) {
        await flush(i);
        runStart = i;
        runZero = zero;
      }
      i = zero ? blockEnd : dataRunEnd(buf, blockEnd, sparse);
    }
    await flush(buf.length);
  } catch (e) {
    if (isVdiskError(e) && e.message.startsWith('error while writing')) throw e;
    throw new VdiskError('EIO', `error while writing at byte ${offset}: ${ioFailureText(e)}`, { offset }, { cause: e });
  }
}
