/**
 * Compression of whole clusters as QEMU does it (FACTS.md 1.8,
 * qcow2-threads.c): raw deflate with a 4 KiB window, or zstd frames without a
 * length prefix. Decompression yields exactly one cluster and ignores the bytes
 * after the compressed stream that the sector-granular descriptor includes.
 */
import { createRequire } from 'node:module';
import type * as Zlib from 'node:zlib';
import { VdiskError } from '../../errors.js';
import { measureZstdFrame } from './zstd-frame.js';

export type CompressionType = 'deflate' | 'zstd';

let zlibModule: typeof Zlib | undefined;

/** node:zlib, loaded when first needed: most commands never compress, and loading it took 2.7 ms of every start. */
function zlib(): typeof Zlib {
  zlibModule ??= createRequire(import.meta.url)('node:zlib') as typeof Zlib;
  return zlibModule;
}

interface ZstdApi {
  compress(buf: Uint8Array, level?: number): Uint8Array;
  decompress(buf: Uint8Array, opts?: { defaultHeapSize?: number }): Uint8Array;
}

// The wasm module is a process-wide singleton inside the library itself; it is
// stateless between calls, so sharing the one initialisation is safe.
let zstdReady: Promise<ZstdApi> | null = null;

function loadZstd(): Promise<ZstdApi> {
  zstdReady ??= import('@bokuweb/zstd-wasm').then(async (m) => {
    await m.init();
    return m;
  });
  return zstdReady;
}

/** QEMU's zstd writer uses the library default level. */
const ZSTD_LEVEL = 3;

export class ClusterCodec {
  readonly type: CompressionType;
  readonly clusterSize: number;
  #zstd: ZstdApi | null = null;

  private constructor(type: CompressionType, clusterSize: number) {
    this.type = type;
    this.clusterSize = clusterSize;
  }

  static async create(type: CompressionType, clusterSize: number): Promise<ClusterCodec> {
    const codec = new ClusterCodec(type, clusterSize);
    if (type === 'zstd') codec.#zstd = await loadZstd();
    return codec;
  }

  /**
   * Compresses one cluster; null when the result would not be smaller than a
   * cluster (the caller then writes it uncompressed, as QEMU does).
   */
  compress(data: Uint8Array): Uint8Array | null {
    let out: Uint8Array;
    if (this.type === 'deflate') {
      out = zlib().deflateRawSync(data, { windowBits: 12, memLevel: 9 });
    } else {
      out = this.#zstdApi().compress(data, ZSTD_LEVEL);
    }
    return out.length <= this.clusterSize - 1 ? out : null;
  }

  /** Decompresses a slot into exactly one cluster; ECORRUPT when it cannot. */
  decompress(slot: Uint8Array, where: { readonly file: string; readonly offset: number }): Uint8Array {
    try {
      const out = this.type === 'deflate' ? this.#inflate(slot) : this.#unzstd(slot);
      if (out.length < this.clusterSize) throw new Error(`only ${out.length} of ${this.clusterSize} bytes decompressed`);
      return out.length === this.clusterSize ? out : out.subarray(0, this.clusterSize);
    } catch (e) {
      const detail = e instanceof Error ? e.message : String(e);
      throw new VdiskError('ECORRUPT', `'${where.file}': cannot decompress ${this.type} cluster at 0x${where.offset.toString(16)}: ${detail}`, {
        file: where.file,
        offset: where.offset,
        field: 'compressed cluster',
      });
    }
  }

  #inflate(slot: Uint8Array): Uint8Array {
    // Z_SYNC_FLUSH: running out of input is fine as long as the cluster is full.
    const z = zlib();
    return z.inflateRawSync(slot, { finishFlush: z.constants.Z_SYNC_FLUSH, maxOutputLength: this.clusterSize * 2 });
  }

  #unzstd(slot: Uint8Array): Uint8Array {
    const api = this.#zstdApi();
    const out = new Uint8Array(this.clusterSize);
    let filled = 0;
    let pos = 0;
    // Several frames may follow each other until the cluster is full.
    while (filled < this.clusterSize) {
      const frame = measureZstdFrame(slot, pos);
      if (!frame.skippable) {
        if (frame.contentSize !== null && frame.contentSize > this.clusterSize - filled) {
          throw new Error(`frame content size ${frame.contentSize} exceeds the cluster`);
        }
        const part = api.decompress(slot.subarray(pos, pos + frame.length), { defaultHeapSize: this.clusterSize - filled });
        if (part.length === 0) throw new Error('zstd frame made no progress');
        out.set(part.subarray(0, this.clusterSize - filled), filled);
        filled += part.length;
      }
      pos += frame.length;
    }
    return out;
  }

  #zstdApi(): ZstdApi {
    if (!this.#zstd) throw new VdiskError('ENOTSUP', 'zstd is not initialised');
    return this.#zstd;
  }
}
