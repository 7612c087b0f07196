/**
 * The raw format: the virtual disk is the host file, byte for byte. Allocation
 * comes from the host's holes (SEEK_DATA / SEEK_HOLE); zeroing and discard use
 * hole punching where the host file system allows it.
 *
 * Like QEMU, the virtual size is the file size rounded up to 512 bytes; the tail
 * past the end of the file reads as zeros and writing there grows the file.
 */
import { VdiskError } from '../../errors.js';
import type { HostFile, HostRange } from '../../host/host-file.js';
import { alignUp } from '../../util/size.js';
import type {
  BackingReference,
  BackingSource,
  BlockDriver,
  CheckReport,
  FormatInfo,
  GuestCopyRun,
  HostExtent,
  LayerExtent,
  RepairMode,
  WriteFlags,
  ZeroFlags,
} from '../driver.js';
import { preallocateRange, parseRawPreallocation } from './preallocation.js';

const SECTOR = 512;
/** Size of the zero buffer reused when the host cannot zero a range itself. */
const ZERO_CHUNK = 1024 * 1024;

export class RawDriver implements BlockDriver {
  readonly format = 'raw' as const;
  readonly backingRef: BackingReference | null = null;
  readonly requestAlignment = 1;
  readonly #host: HostFile;
  #length: number;

  private constructor(host: HostFile, length: number) {
    this.#host = host;
    this.#length = length;
  }

  /** Wraps an opened host file; the virtual size follows the file size. */
  static async fromHost(host: HostFile): Promise<RawDriver> {
    return new RawDriver(host, alignUp(await host.size(), SECTOR));
  }

  get filename(): string {
    return this.#host.path;
  }

  get createdZeroed(): boolean {
    return this.#host.device !== true;
  }

  get readOnly(): boolean {
    return this.#host.readOnly;
  }

  get length(): number {
    return this.#length;
  }

  setBacking(backing: BackingSource | null): void {
    if (backing !== null) {
      throw new VdiskError('ENOTSUP', `Backing file not supported for file format 'raw' ('${this.filename}')`, {
        file: this.filename,
      });
    }
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    await this.#host.read(buf, offset);
  }

  /** No async frame or default flags object: this runs once per guest request. */
  write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    if (flags?.fua === true) return this.#writeFua(offset, data);
    try {
      return this.#host.write(data, offset);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  async #writeFua(offset: number, data: Uint8Array): Promise<void> {
    await this.#host.write(data, offset);
    await this.#host.sync();
  }

  /** A raw image's bytes lie at their own offset in the file. */
  async hostExtent(offset: number, length: number): Promise<HostExtent> {
    return { kind: 'host', range: { file: this.#host, offset, length } };
  }

  hostRangeNow(offset: number, length: number): HostRange | null {
    return { file: this.#host, offset, length };
  }

  async writeFromHost(offset: number, src: HostRange, flags: WriteFlags = {}): Promise<boolean> {
    if (!this.#host.copyFrom || !this.#host.canCopyFrom?.(src.file)) return false;
    await this.#host.copyFrom(src, offset);
    if (flags.fua) await this.#host.sync();
    return true;
  }

  async writeRunsFromHost(runs: readonly GuestCopyRun[], zeroBlock: number): Promise<number | null> {
    if (!this.#host.copyRunsFrom) return null;
    // The raw file is the disk: guest offsets are host offsets.
    return this.#host.copyRunsFrom(
      runs.map((r) => ({ src: r.src, at: r.offset })),
      zeroBlock,
    );
  }

  /**
   * Zeroes a range the cheapest way the host allows: punching a hole when the
   * caller lets the range be deallocated, else FALLOC_FL_ZERO_RANGE, else by
   * writing zeros (which fastZero forbids).
   */
  async writeZeroes(offset: number, length: number, flags: ZeroFlags = {}): Promise<void> {
    if (length === 0) return;
    const fileSize = await this.#host.size();
    // Zeroing wholly past the end of the file changes nothing a reader sees.
    if (offset >= fileSize) return;
    let done = false;
    if (flags.mayUnmap) done = await this.#host.punchHole(offset, length);
    if (!done) done = await this.#host.zeroRange(offset, length);
    if (!done) {
      if (flags.fastZero) {
        throw new VdiskError('ENOTSUP', `Cannot zero ${length} bytes at offset ${offset} of '${this.filename}' quickly`, {
          file: this.filename,
          offset,
        });
      }
      await this.#writeZeroBuffers(offset, length);
    }
    if (flags.fua) await this.#host.sync();
  }

  async discard(offset: number, length: number): Promise<void> {
    // Discard is advisory: where the host cannot punch holes the data stays.
    if (length > 0) await this.#host.punchHole(offset, length);
  }

  async flush(): Promise<void> {
    await this.#host.sync();
  }

  /**
   * Holes of the host file read as zeros and are reported allocated-zero, data
   * as allocated-data; both at host offset = guest offset, as QEMU's file driver
   * reports them. The tail past the end of the file (up to the 512-byte rounded
   * length) is a hole.
   */
  async blockStatus(offset: number, length: number): Promise<LayerExtent[]> {
    const end = offset + length;
    const fileSize = await this.#host.size();
    const out: LayerExtent[] = [];
    let pos = offset;
    // Where SEEK_DATA last said data begins: a hole's end needs no second lseek
    // there (a half-data 4 GiB convert made 6,144 lseeks instead of 4,096).
    let dataAt = -1;
    while (pos < end) {
      let dataEnd: number;
      let isData: boolean;
      if (pos >= fileSize) {
        dataEnd = end;
        isData = false;
      } else {
        const next = pos === dataAt ? pos : await this.#host.seekData(pos);
        if (next !== null) dataAt = next;
        if (next === null || next > pos) {
          isData = false;
          dataEnd = next === null ? end : Math.min(next, end);
        } else {
          isData = true;
          dataEnd = Math.min(await this.#host.seekHole(pos), end);
        }
      }
      // A host that answers without progress would loop forever; treat the rest as data.
      if (dataEnd <= pos) {
        isData = true;
        dataEnd = end;
      }
      pushExtent(out, pos, dataEnd - pos, isData);
      pos = dataEnd;
    }
    return out;
  }

  async resize(newLength: number, options: { readonly shrink?: boolean; readonly preallocation?: string } = {}): Promise<void> {
    const prealloc = parseRawPreallocation(options.preallocation, this.filename);
    const oldSize = await this.#host.size();
    if (newLength < this.#length && options.shrink !== true) {
      throw new VdiskError('EINVAL', 'Use the --shrink option to perform a shrink operation.', { file: this.filename });
    }
    if (newLength < oldSize && prealloc !== 'off') {
      throw new VdiskError('ENOTSUP', `Preallocation mode '${prealloc}' cannot be used when shrinking '${this.filename}'`, {
        file: this.filename,
      });
    }
    if (this.#host.device === true && newLength !== oldSize) {
      throw new VdiskError('ENOTSUP', 'Cannot resize device files', { file: this.filename });
    }
    await this.#host.truncate(newLength);
    if (newLength > oldSize) await preallocateRange(this.#host, { from: oldSize, to: newLength, mode: prealloc });
    this.#length = alignUp(newLength, SECTOR);
  }

  async info(): Promise<FormatInfo> {
    return { format: 'raw', virtualSize: this.#length };
  }

  async check(_repair: RepairMode): Promise<CheckReport> {
    // qemu-img prints exactly this and exits with status 63.
    throw new VdiskError('ENOTSUP', 'This image format does not support checks', { file: this.filename });
  }

  async close(): Promise<void> {
    await this.#host.close();
  }

  async #writeZeroBuffers(offset: number, length: number): Promise<void> {
    const zeros = new Uint8Array(Math.min(ZERO_CHUNK, length));
    for (let pos = offset; pos < offset + length; pos += zeros.length) {
      const n = Math.min(zeros.length, offset + length - pos);
      await this.#host.write(n === zeros.length ? zeros : zeros.subarray(0, n), pos);
    }
  }
}

function pushExtent(out: LayerExtent[], offset: number, length: number, isData: boolean): void {
  const last = out[out.length - 1];
  if (last && last.data === isData) {
    out[out.length - 1] = { ...last, length: last.length + length };
    return;
  }
  out.push({ length, allocated: true, zero: !isData, data: isData, hostOffset: offset });
}
