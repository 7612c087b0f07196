/**
 * Merges of ploop delta stacks (a DiskDescriptor.xml's chain opened as block
 * nodes, one per delta), online or offline:
 *
 * - backward: the top delta into the delta below it. This is an active commit
 *   (commit.ts): the guest keeps writing to the top, dirty ranges are copied
 *   again, the job is ready when the lower delta holds everything; complete
 *   switches the users over to the lower delta, cancel leaves the top in use.
 * - forward: a delta below the top into the delta above it. Every cluster the
 *   delta holds and the one above does not is copied up, with the range locked
 *   against the guest's writes to the upper delta (a guest write always wins);
 *   ready when all is copied and flushed; complete makes the upper delta read
 *   through to what lay below the merged one. Cancel leaves a valid stack: the
 *   upper delta only gained clusters with the content it already showed.
 *
 * With a descriptor, completion also rewrites it (the merged delta leaves it)
 * and then deletes the merged delta's file. Crash-safety order: the receiving
 * delta is flushed (data synced, then its BAT written and synced) before the
 * descriptor is replaced (tmp + sync + rename), and the merged file is deleted
 * only after that, so a crash leaves either the old stack (which reads the same)
 * or the new one.
 */
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { BlockNode } from '../block/node.js';
import { VdiskError } from '../errors.js';
import {
  dropMergedIntoChild,
  dropMergedTop,
  readDescriptorModel,
  writeDescriptor,
  type DescriptorModel,
} from '../formats/ploop/descriptor-edit.js';
import { readDescriptorText } from '../formats/ploop/stack.js';
import { BlockCopyJob, type BlockJobOptions } from './block-job.js';
import { CommitJob, type PivotFn } from './commit.js';
import { COPY_CHUNK } from './copy.js';
import type { Job, JobType } from './job.js';
import { unlinkPath } from '../host/fs-calls.js';

export type PloopMergeDirection = 'backward' | 'forward';

export interface PloopMergeOptions extends BlockJobOptions {
  /** The active (top) node of the stack. */
  readonly top: BlockNode;
  readonly direction: PloopMergeDirection;
  /** Forward: the delta merged up, counted from the top (1 = the delta just below the top); default 1. */
  readonly depth?: number;
  /** The stack's DiskDescriptor.xml, rewritten on completion; the merged file is then deleted. */
  readonly descriptor?: string;
  /** Backward: switches every user of the old top to the delta below it (the daemon's NodeGraph.replace). */
  readonly pivot?: PivotFn;
  /**
   * Forward: finish as soon as everything is copied, with no `ready` phase
   * (QMP block-stream runs it this way: a stream job is never ready).
   */
  readonly autoComplete?: boolean;
  /** Forward: the QMP job type reported (`stream` when started by block-stream); default `commit`. */
  readonly jobType?: 'commit' | 'stream';
}

/** How long a ready job sleeps before looking for complete/cancel again (ms). */
const READY_POLL_MS = 20;

interface DescriptorPlan {
  readonly path: string;
  readonly model: DescriptorModel;
}

async function loadDescriptor(path: string | undefined): Promise<DescriptorPlan | null> {
  if (path === undefined) return null;
  return { path, model: readDescriptorModel(await readDescriptorText(path), path) };
}

/** The descriptor's image stored as `file` for `node`, by resolved path; EINVAL when the node is not in it. */
function guidOf(plan: DescriptorPlan, node: BlockNode): string {
  const dir = dirname(resolve(plan.path));
  const img = plan.model.images.find((i) => resolve(isAbsolute(i.file) ? i.file : join(dir, i.file)) === resolve(node.filename));
  if (!img) {
    throw new VdiskError('EINVAL', `'${node.filename}' is not an image of '${plan.path}'`, { file: plan.path, field: 'File' });
  }
  return img.guid;
}

/** Replaces the descriptor (after the receiving delta is durable), then deletes the merged delta's file. */
async function finishDescriptor(plan: DescriptorPlan, dropped: BlockNode): Promise<void> {
  await writeDescriptor(plan.path, plan.model);
  await unlinkPath(dropped.filename);
}

/**
 * Creates (does not start) the merge job.
 *
 * @example
 *   const top = await openImage('DiskDescriptor.xml');
 *   const job = createPloopMerge({ id: 'm', top, direction: 'backward', descriptor: 'DiskDescriptor.xml' });
 *   job.start(); // ... when ready: job.complete(); await job.wait(); await job.result.close();
 */
export function createPloopMerge(options: PloopMergeOptions): PloopBackwardMerge | PloopForwardMerge {
  return options.direction === 'backward' ? new PloopBackwardMerge(options) : new PloopForwardMerge(options);
}

/** Backward merge: commit of the active top delta into the delta below it. */
export class PloopBackwardMerge extends CommitJob {
  readonly #descriptor: string | undefined;
  #plan: DescriptorPlan | null = null;

  constructor(options: PloopMergeOptions) {
    const base = options.top.backing;
    if (!base) {
      throw new VdiskError('EINVAL', `'${options.top.filename}' has no delta below it to merge into`, { file: options.top.filename });
    }
    if (base.length < options.top.length) {
      // Growing the lower delta could move clusters its read-only twin in the stack still reads.
      throw new VdiskError('ENOTSUP', `Cannot merge '${options.top.filename}' into the smaller '${base.filename}': resize it first`, {
        file: base.filename,
        field: 'size',
      });
    }
    super({ ...options, base, active: true, ...(options.pivot ? { pivot: options.pivot } : {}) });
    this.#descriptor = options.descriptor;
  }

  #switched = false;

  /** The stack's top node once the job has completed (the delta merged into); null before or after a cancel. */
  get result(): BlockNode | null {
    return this.#switched ? this.base : null;
  }

  protected override async body(): Promise<void> {
    this.#plan = await loadDescriptor(this.#descriptor);
    if (this.#plan) {
      const topGuid = guidOf(this.#plan, this.top);
      guidOf(this.#plan, this.base);
      if (topGuid.toLowerCase() !== this.#plan.model.topGuid.toLowerCase()) {
        throw new VdiskError('EINVAL', `'${this.top.filename}' is not the top delta of '${this.#plan.path}'`, { file: this.#plan.path });
      }
    }
    await super.body();
  }

  protected override async commitChanges(): Promise<void> {
    await super.commitChanges(); // base flushed, users switched, old top closed
    this.#switched = true;
    const plan = this.#plan;
    if (!plan) return;
    dropMergedTop(plan.model, plan.path);
    await finishDescriptor(plan, this.top);
  }
}

/** Forward merge: a delta below the top into the delta above it. */
export class PloopForwardMerge extends BlockCopyJob {
  override readonly type: JobType;
  /** The delta merged (and dropped). */
  readonly merged: BlockNode;
  /** The delta above it, which receives its clusters. */
  readonly upper: BlockNode;
  readonly top: BlockNode;
  readonly #descriptor: string | undefined;
  readonly #autoComplete: boolean;
  #plan: DescriptorPlan | null = null;
  #reopened = false;
  #switched = false;

  constructor(options: PloopMergeOptions) {
    super(options);
    const depth = options.depth ?? 1;
    const chain = options.top.chain();
    const merged = chain[depth];
    const upper = chain[depth - 1];
    if (!Number.isSafeInteger(depth) || depth < 1 || !merged || !upper) {
      throw new VdiskError('EINVAL', `No delta at depth ${depth} below the top of '${options.top.filename}' (the stack has ${chain.length})`, {
        file: options.top.filename,
        field: 'depth',
      });
    }
    this.top = options.top;
    this.merged = merged;
    this.upper = upper;
    this.#descriptor = options.descriptor;
    this.#autoComplete = options.autoComplete === true;
    this.type = options.jobType ?? 'commit';
  }

  protected override async body(): Promise<void> {
    this.#plan = await loadDescriptor(this.#descriptor);
    if (this.#plan) {
      guidOf(this.#plan, this.upper);
      guidOf(this.#plan, this.merged);
    }
    const { merged, upper } = this;
    if (upper.readOnly) {
      await upper.reopen({ readOnly: false });
      this.#reopened = true;
    }
    this.setTotal(merged.length);
    for (let pos = 0; pos < merged.length; ) {
      await this.pausePoint();
      const length = Math.min(COPY_CHUNK * 64, merged.length - pos);
      for (const e of await merged.layerStatus(pos, length)) {
        await this.#copyUp(pos, e.length, e.allocated);
        pos += e.length;
      }
    }
    await upper.flush();
    if (this.#autoComplete) return;
    this.markReady();
    while (!this.completeRequested && !this.cancelRequested) {
      await this.pausePoint();
      await this.idle(READY_POLL_MS);
    }
    await this.pausePoint();
  }

  /** Copies [offset, offset+length) up where the upper delta does not define it yet, one locked chunk at a time. */
  async #copyUp(offset: number, length: number, allocated: boolean): Promise<void> {
    const { upper } = this;
    const step = Math.max(COPY_CHUNK, upper.clusterSize ?? 0);
    for (let off = offset; off < offset + length; ) {
      const n = Math.min(step - (off % step), offset + length - off);
      if (allocated) {
        const release = await upper.lockRange(off, n);
        try {
          // Under the range lock the job reads and writes the upper delta's driver directly.
          let at = off;
          for (const own of await upper.driver.blockStatus(off, n)) {
            if (!own.allocated) {
              const buf = new Uint8Array(own.length);
              await upper.driver.read(at, buf);
              await upper.driver.write(at, buf);
            }
            at += own.length;
          }
        } finally {
          release();
        }
        await this.throttle(n);
      } else {
        this.advance(n);
      }
      off += n;
    }
  }

  protected override async commitChanges(): Promise<void> {
    const { merged, upper } = this;
    await upper.flush();
    // Every cluster of `merged` is now in `upper`: reading below `merged` directly shows the same.
    await upper.changeBacking(merged.backing, { persist: false });
    await merged.closeLayer();
    this.#switched = true;
    if (this.#reopened && upper !== this.top) await upper.reopen({ readOnly: true });
    this.#reopened = false;
    const plan = this.#plan;
    if (!plan) return;
    dropMergedIntoChild(plan.model, guidOf(plan, merged), plan.path);
    await finishDescriptor(plan, merged);
  }

  protected override async abortChanges(): Promise<void> {
    await this.upper.flush().catch(() => undefined);
    if (this.#reopened && this.upper !== this.top) await this.upper.reopen({ readOnly: true });
  }

  /** The stack's top node once the job has completed (unchanged by a forward merge); null before or after a cancel. */
  get result(): BlockNode | null {
    return this.#switched ? this.top : null;
  }
}

export type PloopMergeJob = Job & { readonly result: BlockNode | null };
