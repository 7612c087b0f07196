// An in-memory BlockDriver for testing the block layer without any real format:
// a byte array plus a per-range allocation state, and a backing it reads through.
import type {
  BackingReference,
  BackingSource,
  BlockDriver,
  CheckReport,
  FormatInfo,
  FormatName,
  LayerExtent,
} from '../../../src/formats/driver.js';

export type FakeState = 'data' | 'zero' | 'unallocated';

export interface FakeDriverOptions {
  readonly filename: string;
  readonly length: number;
  /** Granularity of the allocation map (bytes). */
  readonly cluster?: number;
  readonly readOnly?: boolean;
  readonly backingRef?: BackingReference | null;
  readonly format?: FormatName;
}

export class FakeDriver implements BlockDriver {
  readonly format: FormatName;
  readonly filename: string;
  readonly readOnly: boolean;
  readonly backingRef: BackingReference | null;
  readonly requestAlignment = 1;
  readonly cluster: number;
  length: number;
  backing: BackingSource | null = null;
  readonly bytes: Uint8Array;
  readonly states: FakeState[];
  /** Every blockStatus call, to check the chain walk asks in large steps. */
  readonly statusCalls: Array<[number, number]> = [];
  readonly log: string[] = [];
  closed = false;

  constructor(options: FakeDriverOptions) {
    this.filename = options.filename;
    this.length = options.length;
    this.cluster = options.cluster ?? 4096;
    this.readOnly = options.readOnly ?? false;
    this.backingRef = options.backingRef ?? null;
    this.format = options.format ?? 'qcow2';
    this.bytes = new Uint8Array(options.length);
    this.states = new Array<FakeState>(Math.ceil(options.length / this.cluster)).fill('unallocated');
  }

  /** Marks [offset, offset+length) (cluster aligned) with a state, filling data with `fill`. */
  set(offset: number, length: number, state: FakeState, fill = 0xaa): this {
    for (let c = offset / this.cluster; c < (offset + length) / this.cluster; c++) this.states[c] = state;
    if (state === 'data') this.bytes.fill(fill, offset, offset + length);
    return this;
  }

  setBacking(backing: BackingSource | null): void {
    this.backing = backing;
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    for (let i = 0; i < buf.length; ) {
      const pos = offset + i;
      const c = Math.floor(pos / this.cluster);
      const n = Math.min(buf.length - i, (c + 1) * this.cluster - pos);
      const part = buf.subarray(i, i + n);
      const state = this.states[c];
      if (state === 'data') part.set(this.bytes.subarray(pos, pos + n));
      else if (state === 'zero' || !this.backing || pos >= this.backing.length) part.fill(0);
      else {
        const inside = Math.min(n, this.backing.length - pos);
        await this.backing.read(pos, part.subarray(0, inside));
        part.fill(0, inside);
      }
      i += n;
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.log.push(`write ${offset} ${data.length}`);
    this.bytes.set(data, offset);
    for (let c = Math.floor(offset / this.cluster); c * this.cluster < offset + data.length; c++) this.states[c] = 'data';
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.log.push(`zero ${offset} ${length}`);
    this.set(offset, length, 'zero');
  }

  async discard(offset: number, length: number): Promise<void> {
    this.log.push(`discard ${offset} ${length}`);
  }

  async flush(): Promise<void> {
    this.log.push('flush');
  }

  async blockStatus(offset: number, length: number): Promise<LayerExtent[]> {
    this.statusCalls.push([offset, length]);
    const out: LayerExtent[] = [];
    for (let pos = offset; pos < offset + length; ) {
      const c = Math.floor(pos / this.cluster);
      const n = Math.min(offset + length - pos, (c + 1) * this.cluster - pos);
      const state = this.states[c] ?? 'unallocated';
      const e: LayerExtent =
        state === 'data'
          ? { length: n, allocated: true, zero: false, data: true, hostOffset: 0x100000 + pos }
          : { length: n, allocated: state === 'zero', zero: state === 'zero', data: false };
      const last = out[out.length - 1];
      if (last && last.allocated === e.allocated && last.zero === e.zero && last.data === e.data) {
        out[out.length - 1] = { ...last, length: last.length + n };
      } else out.push(e);
      pos += n;
    }
    return out;
  }

  async resize(newLength: number): Promise<void> {
    this.length = newLength;
  }

  async info(): Promise<FormatInfo> {
    return { format: this.format, virtualSize: this.length, clusterSize: this.cluster };
  }

  async check(): Promise<CheckReport> {
    return { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, messages: [] };
  }

  async close(): Promise<void> {
    this.log.push('close');
    this.closed = true;
  }
}
