/** An in-memory HostFile for model and power-cut tests: fast, and its bytes can be copied at any point. */
import type { HostFile } from '../../src/host/host-file.js';

export class MemoryHostFile implements HostFile {
  readonly path: string;
  readonly readOnly: boolean;
  #data: Uint8Array;
  #size: number;

  constructor(path: string, bytes: Uint8Array, options: { readonly readOnly?: boolean; readonly share?: boolean } = {}) {
    this.path = path;
    this.readOnly = options.readOnly ?? false;
    this.#data = options.share ? bytes : bytes.slice();
    this.#size = bytes.length;
  }

  /** A copy of the file's bytes. */
  bytes(): Uint8Array {
    return this.#data.slice(0, this.#size);
  }

  #grow(end: number): void {
    if (end > this.#data.length) {
      const next = new Uint8Array(Math.max(end, this.#data.length * 2));
      next.set(this.#data.subarray(0, this.#size));
      this.#data = next;
    }
    if (end > this.#size) this.#size = end;
  }

  async size(): Promise<number> {
    return this.#size;
  }
  async allocatedSize(): Promise<number> {
    return this.#size;
  }
  async read(buf: Uint8Array, offset: number): Promise<void> {
    const n = Math.max(0, Math.min(buf.length, this.#size - offset));
    if (n > 0) buf.set(this.#data.subarray(offset, offset + n));
    buf.fill(0, n);
  }
  async write(buf: Uint8Array, offset: number): Promise<void> {
    this.#grow(offset + buf.length);
    this.#data.set(buf, offset);
  }
  async writev(bufs: readonly Uint8Array[], offset: number): Promise<void> {
    let pos = offset;
    for (const b of bufs) {
      await this.write(b, pos);
      pos += b.length;
    }
  }
  async sync(): Promise<void> {}
  async truncate(length: number): Promise<void> {
    this.#grow(length);
    this.#data.fill(0, length);
    this.#size = length;
  }
  async punchHole(offset: number, length: number): Promise<boolean> {
    const end = Math.min(this.#size, offset + length);
    if (end > offset) this.#data.fill(0, offset, end);
    return true;
  }
  async zeroRange(offset: number, length: number): Promise<boolean> {
    this.#grow(offset + length);
    this.#data.fill(0, offset, offset + length);
    return true;
  }
  async allocate(offset: number, length: number): Promise<boolean> {
    this.#grow(offset + length);
    return true;
  }
  async seekData(offset: number): Promise<number | null> {
    return offset < this.#size ? offset : null;
  }
  async seekHole(offset: number): Promise<number> {
    return Math.max(offset, this.#size);
  }
  async close(): Promise<void> {}
}
