/**
 * Stream (forward merge): copy into `top` everything it reads from the images
 * below it down to (not including) `base`, then make `base` top's backing and
 * drop the images in between.
 *
 * The guest keeps writing `top`. Each step locks its range against guest
 * writes (waiting for those in flight), checks again that `top` still leaves
 * the range to its backing, and only then copies: a guest write is never
 * overwritten with older data from below.
 */
import type { BlockNode } from '../block/node.js';
import { VdiskError } from '../errors.js';
import { BlockCopyJob, type BlockJobOptions } from './block-job.js';
import { COPY_CHUNK, CopyError } from './copy.js';
import type { JobType } from './job.js';

export interface StreamOptions extends BlockJobOptions {
  readonly top: BlockNode;
  /** The image that stays below `top`; null (default): everything is copied and top ends with no backing. */
  readonly base?: BlockNode | null;
  /** The backing name written into top (QMP backing-file); default: base's filename. */
  readonly backingFile?: string;
  readonly chunkSize?: number;
}

export class StreamJob extends BlockCopyJob {
  override readonly type: JobType = 'stream';
  readonly top: BlockNode;
  readonly base: BlockNode | null;
  readonly #options: StreamOptions;
  readonly #dropped: BlockNode[];
  readonly #chunk: number;

  constructor(options: StreamOptions) {
    super(options);
    const top = options.top;
    const base = options.base ?? null;
    if (top.readOnly) throw new VdiskError('EPERM', `Cannot stream into '${top.filename}': it is open read-only`, { file: top.filename });
    const dropped: BlockNode[] = [];
    let reached = base === null;
    for (let n = top.backing; n; n = n.backing) {
      if (n === base) {
        reached = true;
        break;
      }
      dropped.push(n);
    }
    if (!reached) throw new VdiskError('EINVAL', `'${base?.filename ?? ''}' is not in the backing chain below '${top.filename}'`, { file: top.filename });
    this.top = top;
    this.base = base;
    this.#options = options;
    this.#dropped = dropped;
    this.#chunk = options.chunkSize ?? COPY_CHUNK;
  }

  protected override async body(): Promise<void> {
    const top = this.top;
    this.setTotal(top.length);
    if (this.#dropped.length === 0) {
      this.advance(top.length);
      return;
    }
    for (let pos = 0; pos < top.length; ) {
      await this.pausePoint();
      const n = Math.min(this.#chunk, top.length - pos);
      const copied = await this.#streamRange(pos, n);
      if (copied) await this.throttle(n);
      else this.advance(n);
      pos += n;
    }
    await top.flush();
  }

  /** Copies what [offset, offset+length) reads from the images between top and base into top. */
  async #streamRange(offset: number, length: number): Promise<boolean> {
    const top = this.top;
    const below = top.backing;
    if (!below) return false;
    let copied = false;
    for (;;) {
      const release = await top.lockRange(offset, length);
      let retry = false;
      try {
        const own = await top.layerStatus(offset, length);
        let pos = offset;
        for (const e of own) {
          if (!e.allocated) {
            const status = await below.blockStatus(pos, e.length, { base: this.base });
            for (const s of status) {
              if (!s.present) continue;
              copied = true;
              const ok = await this.guarded(() => this.#copyUnderLock(s.offset, s.length, s.zero && !s.data));
              if (!ok) retry = true;
            }
          }
          pos += e.length;
        }
      } finally {
        release();
      }
      if (!retry) return copied;
      await this.pausePoint();
    }
  }

  /** Under the range lock: the job writes top's driver directly (its own lock would hold a node write). */
  async #copyUnderLock(offset: number, length: number, zero: boolean): Promise<void> {
    const top = this.top;
    const buf = new Uint8Array(length);
    if (!zero) {
      try {
        await top.read(offset, buf);
      } catch (e) {
        throw new CopyError('read', e);
      }
    }
    try {
      if (zero) await top.driver.writeZeroes(offset, length);
      else await top.driver.write(offset, buf);
    } catch (e) {
      throw new CopyError('write', e);
    }
  }

  protected override async commitChanges(): Promise<void> {
    const reference = this.#options.backingFile;
    await this.top.changeBacking(this.base, { persist: true, ...(reference !== undefined ? { reference } : {}) });
    for (const n of this.#dropped) await n.closeLayer();
  }
}
