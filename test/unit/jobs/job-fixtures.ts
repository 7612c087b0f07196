// In-memory chains of BlockNodes over FakeDrivers, a model-checked guest writer, and event helpers for job tests.
import { BlockNode } from '../../../src/block/node.js';
import type { ImageNode } from '../../../src/block/types.js';
import type { BackingReference } from '../../../src/formats/driver.js';
import type { Job, JobEvent } from '../../../src/jobs/job.js';
import { FakeDriver } from '../block/fake-driver.js';

/** A FakeDriver that can rewrite its backing reference, as qcow2's changeBackingFile does. */
export class RebasableDriver extends FakeDriver {
  readonly refs: Array<BackingReference | null> = [];
  async changeBackingFile(ref: BackingReference | null): Promise<void> {
    this.refs.push(ref);
  }
}

export interface Chain {
  readonly drivers: RebasableDriver[];
  /** Nodes bottom first. */
  readonly nodes: BlockNode[];
  readonly top: BlockNode;
}

/** Builds a chain of `layers` images of `length` bytes, bottom first; `fill(i, d)` sets each layer's content. */
export async function makeChain(length: number, layers: number, fill: (i: number, d: FakeDriver) => void): Promise<Chain> {
  const drivers: RebasableDriver[] = [];
  const nodes: BlockNode[] = [];
  let below: BlockNode | null = null;
  for (let i = 0; i < layers; i++) {
    const d = new RebasableDriver({ filename: `layer${i}.qcow2`, length, cluster: 512 });
    fill(i, d);
    drivers.push(d);
    below = await BlockNode.attach(d, { backing: below });
    nodes.push(below);
  }
  if (!below) throw new Error('no layers');
  return { drivers, nodes, top: below };
}

export async function readAll(node: ImageNode): Promise<Uint8Array> {
  const buf = new Uint8Array(node.length);
  await node.read(0, buf);
  return buf;
}

/** A guest writing random blocks through `target()` (which a pivot may change) and recording them in a model. */
export class GuestWriter {
  stopped = false;
  writes = 0;
  readonly #done: Promise<void>;

  constructor(target: () => ImageNode, model: Uint8Array, region: { offset: number; length: number; seed: number; delayMs?: number }) {
    this.#done = this.#run(target, model, region);
  }

  async #run(target: () => ImageNode, model: Uint8Array, region: { offset: number; length: number; seed: number; delayMs?: number }): Promise<void> {
    let seed = region.seed;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    while (!this.stopped) {
      const len = 512 * (1 + (rand() % 16));
      const off = region.offset + 512 * (rand() % Math.floor((region.length - len) / 512));
      const data = new Uint8Array(len).fill(1 + (rand() % 250));
      if (rand() % 8 === 0) {
        await target().writeZeroes(off, len);
        model.fill(0, off, off + len);
      } else {
        await target().write(off, data);
        model.set(data, off);
      }
      this.writes++;
      const delay = region.delayMs ?? 0;
      await new Promise((r) => (delay > 0 ? setTimeout(r, delay) : setImmediate(r)));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.#done;
  }
}

export function eventsOf(job: Job): string[] {
  const out: string[] = [];
  job.onEvent((e: JobEvent) => out.push(e.event === 'JOB_STATUS_CHANGE' ? e.data.status : e.event));
  return out;
}

/** Resolves at the first event of `job` matching `name` (a status or an event name). */
export function nextEvent(job: Job, name: string): Promise<JobEvent> {
  return new Promise((resolve) => {
    const off = job.onEvent((e) => {
      if (e.event === name || (e.event === 'JOB_STATUS_CHANGE' && e.data.status === name)) {
        off();
        resolve(e);
      }
    });
  });
}
