/**
 * BlockNode: one opened image with the nodes below it. It is the ImageNode the
 * CLI, the NBD server and the jobs use, and the BackingSource the overlay's
 * driver reads through. It checks every request (range, read-only) before the
 * driver sees it, and walks the chain for block status and seeking.
 */
import { VdiskError } from '../errors.js';
import type { BackingSource, BlockDriver, FormatName } from '../formats/driver.js';
import { probeFormat } from '../formats/registry.js';
import { mergeChainStatus, type StatusLayer } from './chain-status.js';
import { checkRequest, checkSize } from './request.js';
import { seekChain } from './seek.js';
import type { ChainExtent, CheckReport, FormatInfo, ImageNode, LayerExtent, RepairMode, WriteFlags, ZeroFlags } from './types.js';

/** How many bytes at the start of a probed raw image are guarded against format-changing writes. */
const PROBE_GUARD = 512;

export interface BlockNodeOptions {
  /** The node below, already opened (it becomes the driver's backing). */
  readonly backing?: BlockNode | null;
  /**
   * The format was found by probing and came out raw. As in QEMU, writes that
   * would make the first sector probe as another format are refused, so a guest
   * cannot turn its disk into, say, a qcow2 that names a host file as backing.
   */
  readonly probedRaw?: boolean;
}

export class BlockNode implements ImageNode {
  readonly driver: BlockDriver;
  readonly backing: BlockNode | null;
  readonly clusterSize: number | undefined;
  readonly #probedRaw: boolean;
  #closed = false;

  private constructor(driver: BlockDriver, backing: BlockNode | null, clusterSize: number | undefined, probedRaw: boolean) {
    this.driver = driver;
    this.backing = backing;
    this.clusterSize = clusterSize;
    this.#probedRaw = probedRaw;
  }

  /** Wraps an opened driver, attaching `options.backing` as its backing source. */
  static async attach(driver: BlockDriver, options: BlockNodeOptions = {}): Promise<BlockNode> {
    const backing = options.backing ?? null;
    const info = await driver.info();
    const node = new BlockNode(driver, backing, info.clusterSize, options.probedRaw ?? false);
    driver.setBacking(backing ? backingSourceOf(backing) : null);
    return node;
  }

  get filename(): string {
    return this.driver.filename;
  }

  get format(): FormatName {
    return this.driver.format;
  }

  get readOnly(): boolean {
    return this.driver.readOnly;
  }

  get length(): number {
    return this.driver.length;
  }

  get requestAlignment(): number {
    return this.driver.requestAlignment;
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.#check(offset, buf.length);
    if (buf.length > 0) await this.driver.read(offset, buf);
  }

  async write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    this.#checkWrite(offset, data.length);
    if (data.length === 0) return;
    if (this.#probedRaw && offset < PROBE_GUARD) await this.#guardProbedHead(offset, data);
    await this.driver.write(offset, data, flags);
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    // Zeros cannot create a format signature, so the probed-raw guard is not needed.
    this.#checkWrite(offset, length);
    if (length > 0) await this.driver.writeZeroes(offset, length, flags);
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#checkWrite(offset, length);
    if (length > 0) await this.driver.discard(offset, length);
  }

  async writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    this.#checkWrite(offset, data.length);
    if (!this.driver.writeCompressed) {
      throw new VdiskError('ENOTSUP', `Compressed writes are not supported by format '${this.format}' ('${this.filename}')`, {
        file: this.filename,
        offset,
      });
    }
    await this.driver.writeCompressed(offset, data);
  }

  async flush(): Promise<void> {
    this.#checkOpen();
    if (!this.readOnly) await this.driver.flush();
  }

  async layerStatus(offset: number, length: number): Promise<LayerExtent[]> {
    this.#check(offset, length);
    return length === 0 ? [] : this.driver.blockStatus(offset, length);
  }

  async blockStatus(offset: number, length: number, options: { readonly base?: ImageNode | null } = {}): Promise<ChainExtent[]> {
    this.#check(offset, length);
    if (length === 0) return [];
    return mergeChainStatus(this.#statusLayers(options.base ?? null), offset, length);
  }

  seekData(offset: number): Promise<number> {
    this.#checkOpen();
    return seekChain(this, offset, 'data');
  }

  seekHole(offset: number): Promise<number> {
    this.#checkOpen();
    return seekChain(this, offset, 'hole');
  }

  info(): Promise<FormatInfo> {
    this.#checkOpen();
    return this.driver.info();
  }

  check(repair: RepairMode): Promise<CheckReport> {
    this.#checkOpen();
    if (repair !== 'none' && this.readOnly) {
      throw new VdiskError('EPERM', `Cannot repair '${this.filename}': it is open read-only`, { file: this.filename });
    }
    return this.driver.check(repair);
  }

  async resize(newLength: number, options?: { readonly shrink?: boolean; readonly preallocation?: string }): Promise<void> {
    this.#checkOpen();
    this.#checkWritable();
    checkSize(this.filename, newLength);
    await this.driver.resize(newLength, options);
  }

  chain(): BlockNode[] {
    const out: BlockNode[] = [];
    for (let n: BlockNode | null = this; n; n = n.backing) out.push(n);
    return out;
  }

  /** Flushes and closes every node of the chain, top first; the first failure is rethrown after all are closed. */
  async close(): Promise<void> {
    let failure: unknown = null;
    for (const node of this.chain()) {
      if (node.#closed) continue;
      node.#closed = true;
      try {
        if (!node.readOnly) await node.driver.flush();
      } catch (e) {
        failure ??= e;
      }
      try {
        await node.driver.close();
      } catch (e) {
        failure ??= e;
      }
    }
    if (failure !== null) throw failure;
  }

  /** The layers from this node down to (not including) `base`, as the chain merge sees them. */
  #statusLayers(base: ImageNode | null): StatusLayer[] {
    const nodes: BlockNode[] = [];
    let found = base === null;
    for (const n of this.chain()) {
      if (n === base) {
        found = true;
        break;
      }
      nodes.push(n);
    }
    if (!found || nodes.length === 0) {
      throw new VdiskError('EINVAL', `'${base?.filename ?? ''}' is not a backing node below '${this.filename}'`, { file: this.filename });
    }
    return nodes.map((n) => ({
      filename: n.filename,
      backingLength: n.backing ? n.backing.length : null,
      status: (offset: number, length: number) => n.driver.blockStatus(offset, length),
    }));
  }

  async #guardProbedHead(offset: number, data: Uint8Array): Promise<void> {
    const head = new Uint8Array(Math.min(PROBE_GUARD, this.length));
    await this.driver.read(0, head);
    head.set(data.subarray(0, Math.max(0, head.length - offset)), offset);
    const becomes = probeFormat(head);
    if (becomes !== 'raw') {
      throw new VdiskError(
        'EPERM',
        `Refusing to write the first sector of '${this.filename}': its format was probed as raw and the write would make it look like ${becomes}; open it with an explicit format (-f raw) to allow this`,
        { file: this.filename, offset },
      );
    }
  }

  #check(offset: number, length: number): void {
    this.#checkOpen();
    checkRequest(this.filename, { offset, length }, this.length);
  }

  #checkWrite(offset: number, length: number): void {
    this.#check(offset, length);
    this.#checkWritable();
  }

  #checkWritable(): void {
    if (this.readOnly) throw new VdiskError('EPERM', `'${this.filename}' is open read-only`, { file: this.filename });
  }

  #checkOpen(): void {
    if (this.#closed) throw new VdiskError('EINVAL', `'${this.filename}' is closed`, { file: this.filename });
  }
}

/**
 * What an overlay's driver sees of the node below: its live length, and reads
 * that are zero-filled past its end instead of failing, so a driver that reads
 * a whole cluster across the backing's end still gets the right bytes.
 */
function backingSourceOf(node: BlockNode): BackingSource {
  return {
    get length(): number {
      return node.length;
    },
    async read(offset: number, buf: Uint8Array): Promise<void> {
      const inside = Math.max(0, Math.min(buf.length, node.length - offset));
      if (inside > 0) await node.read(offset, buf.subarray(0, inside));
      buf.fill(0, inside);
    },
  };
}
