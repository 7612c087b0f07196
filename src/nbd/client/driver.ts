/**
 * The `nbd` node driver: a remote export seen through the BlockDriver seam, so
 * the block layer (BlockNode), exports and jobs use it like a local image.
 * It lives here, not in formats/, because a format driver may not import nbd/.
 */
import { VdiskError } from '../../errors.js';
import type { BackingReference, BackingSource, BlockDriver, CheckReport, FormatInfo, LayerExtent, WriteFlags, ZeroFlags } from '../../formats/driver.js';
import { CmdFlag, TransmissionFlag } from '../protocol/constants.js';
import { NbdClient, type NbdConnectOptions } from './client.js';

export class NbdDriver implements BlockDriver {
  readonly format = 'nbd' as const;
  readonly filename: string;
  readonly readOnly: boolean;
  readonly backingRef: BackingReference | null = null;
  readonly requestAlignment = 1;
  readonly #client: NbdClient;

  private constructor(client: NbdClient, filename: string, readOnly: boolean) {
    this.#client = client;
    this.filename = filename;
    this.readOnly = readOnly;
  }

  /** Connects to the export; read-only when asked or when the server says so. */
  static async open(options: NbdConnectOptions & { readonly filename: string; readonly readOnly?: boolean }): Promise<NbdDriver> {
    const client = await NbdClient.connect(options);
    return new NbdDriver(client, options.filename, options.readOnly === true || client.readOnly);
  }

  get length(): number {
    return this.#client.size;
  }

  setBacking(_backing: BackingSource | null): void {
    // A remote export has no backing of its own here.
  }

  read(offset: number, buf: Uint8Array): Promise<void> {
    return this.#client.read(offset, buf);
  }

  write(offset: number, data: Uint8Array, flags?: WriteFlags): Promise<void> {
    return this.#client.write(offset, data, flags?.fua === true && this.#client.can(TransmissionFlag.SEND_FUA));
  }

  async writeZeroes(offset: number, length: number, flags?: ZeroFlags): Promise<void> {
    if (!this.#client.can(TransmissionFlag.SEND_WRITE_ZEROES)) {
      if (flags?.fastZero) throw new VdiskError('ENOTSUP', `'${this.filename}' cannot write zeros fast`, { file: this.filename, offset });
      const chunk = new Uint8Array(Math.min(length, 1 << 20));
      for (let done = 0; done < length; done += chunk.byteLength) {
        await this.write(offset + done, chunk.subarray(0, Math.min(chunk.byteLength, length - done)), flags);
      }
      return;
    }
    let f = 0;
    if (!flags?.mayUnmap) f |= CmdFlag.NO_HOLE;
    if (flags?.fua && this.#client.can(TransmissionFlag.SEND_FUA)) f |= CmdFlag.FUA;
    if (flags?.fastZero) {
      if (!this.#client.can(TransmissionFlag.SEND_FAST_ZERO)) throw new VdiskError('ENOTSUP', `'${this.filename}' cannot write zeros fast`, { file: this.filename, offset });
      f |= CmdFlag.FAST_ZERO;
    }
    await this.#client.writeZeroes(offset, length, f);
  }

  async discard(offset: number, length: number): Promise<void> {
    // Discard is advisory: a server without TRIM just keeps the data.
    if (this.#client.can(TransmissionFlag.SEND_TRIM)) await this.#client.trim(offset, length);
  }

  async flush(): Promise<void> {
    if (this.#client.can(TransmissionFlag.SEND_FLUSH)) await this.#client.flush();
  }

  /** base:allocation mapped to layer extents; without it, everything is data. */
  async blockStatus(offset: number, length: number): Promise<LayerExtent[]> {
    const out: LayerExtent[] = [];
    let pos = offset;
    const end = offset + length;
    while (pos < end) {
      if (this.#client.baseAllocationId === null) {
        out.push({ length: end - pos, allocated: true, zero: false, data: true });
        break;
      }
      const extents = await this.#client.blockStatus(pos, end - pos);
      if (extents.length === 0) throw new VdiskError('EIO', `NBD server sent no block status at offset ${pos}`, { file: this.filename, offset: pos });
      for (const e of extents) {
        const len = Math.min(e.length, end - pos);
        if (len <= 0) break;
        // The remote image is one layer to us: holes read as zeros and are not allocated.
        out.push({ length: len, allocated: !e.hole, zero: e.zero, data: !e.hole });
        pos += len;
      }
    }
    return out;
  }

  resize(newLength: number): Promise<void> {
    return Promise.reject(new VdiskError('ENOTSUP', `Cannot resize NBD export '${this.filename}' to ${newLength}`, { file: this.filename }));
  }

  info(): Promise<FormatInfo> {
    return Promise.resolve({ format: 'nbd', virtualSize: this.length });
  }

  check(): Promise<CheckReport> {
    return Promise.resolve({ corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, messages: [] });
  }

  close(): Promise<void> {
    return this.#client.close();
  }
}
