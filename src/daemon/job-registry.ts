/**
 * The daemon's jobs: by id, with the nodes each one holds, so a second job on
 * the same node is refused and a node that stops being served cancels the
 * jobs on it. Events of every job are passed to one listener (QMP).
 */
import type { ImageNode } from '../block/index.js';
import { VdiskError } from '../errors.js';
import type { Job, JobEvent } from '../jobs/index.js';
import type { NodeGraph } from './graph.js';

export class JobRegistry {
  readonly #jobs = new Map<string, Job>();
  /** node → the job holding it. */
  readonly #claims = new Map<ImageNode, Job>();
  readonly #onEvent: (event: JobEvent) => void;
  readonly #stopRelease: () => void;

  constructor(graph: NodeGraph, onEvent: (event: JobEvent) => void) {
    this.#onEvent = onEvent;
    this.#stopRelease = graph.onRelease((node) => this.#cancelOn(node));
  }

  get jobs(): readonly Job[] {
    return [...this.#jobs.values()];
  }

  /** QEMU's "Job not found" lookup (job-* commands). */
  get(id: string): Job {
    const job = this.#jobs.get(id);
    if (!job) throw new VdiskError('ENOENT', 'Job not found', { field: 'id' });
    return job;
  }

  find(id: string): Job | undefined {
    return this.#jobs.get(id);
  }

  /** Refuses a new job on a node another job holds, or with an id in use. */
  checkFree(id: string, nodes: readonly ImageNode[]): void {
    if (this.#jobs.has(id)) throw new VdiskError('EINVAL', `Job ID '${id}' already in use`, { field: 'job-id' });
    for (const n of nodes) {
      const holder = this.#claims.get(n);
      if (holder) {
        throw new VdiskError('EBUSY', `Node '${n.filename}' is busy: block device is in use by block job: ${holder.type}`, { file: n.filename });
      }
    }
  }

  /** Registers and starts a job holding `nodes` until it concludes. */
  start(job: Job, nodes: readonly ImageNode[]): void {
    this.checkFree(job.id, nodes);
    this.#jobs.set(job.id, job);
    for (const n of nodes) this.#claims.set(n, job);
    job.onEvent((e) => {
      if (e.event === 'JOB_STATUS_CHANGE' && (e.data.status === 'concluded' || e.data.status === 'null')) this.#unclaim(job);
      this.#onEvent(e);
      if (e.event === 'JOB_STATUS_CHANGE' && e.data.status === 'null') this.#jobs.delete(job.id);
    });
    job.start();
  }

  /** Cancels every job (hard) and waits until all have concluded: the daemon calls it before closing nodes. */
  async cancelAll(): Promise<void> {
    const jobs = [...this.#jobs.values()];
    for (const j of jobs) this.#forceCancel(j);
    await Promise.all(jobs.map((j) => j.wait()));
  }

  close(): void {
    this.#stopRelease();
  }

  #cancelOn(node: ImageNode): void {
    const job = this.#claims.get(node);
    if (job) this.#forceCancel(job);
  }

  #forceCancel(job: Job): void {
    try {
      job.cancel(true);
    } catch {
      // Already concluded or not cancellable in its state: nothing to stop.
    }
  }

  #unclaim(job: Job): void {
    for (const [n, j] of this.#claims) if (j === job) this.#claims.delete(n);
  }
}
