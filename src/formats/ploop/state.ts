/**
 * The mutable state of one open ploop image, shared by the driver (I/O) and the
 * whole-image operations in their own modules (check.ts, resize.ts). Those run
 * under the driver's exclusive gate, so they may change any field.
 */
import type { HostFile } from '../../host/host-file.js';
import type { BatTable } from './bat-table.js';
import type { FileGrowth } from '../file-growth.js';
import { encodeHeader, type PloopHeader } from './header.js';
import type { PloopLayout } from './layout.js';

/** Largest buffer used to copy or zero part of a cluster (clusters may be up to ~2 GiB). */
export const COPY_CHUNK = 1024 * 1024;

export interface PloopState {
  readonly filename: string;
  readonly host: HostFile;
  header: PloopHeader;
  layout: PloopLayout;
  readonly bat: BatTable;
  /** Next free host offset: new clusters are appended here. */
  dataEnd: number;
  /** Reserves file space ahead of `dataEnd` (writers only). */
  readonly growth: FileGrowth | null;
  /** BAT entries found bad at open and not repaired; I/O through them is refused. */
  badEntries: Set<number>;
  /** The image was left in use (not closed cleanly) and has not been repaired. */
  unclean: boolean;
  /** Host offset of the format-extension cluster this image keeps, or 0. */
  extHost: number;
}

/** Replaces the header in memory and in the BAT's page 0 (written at the next flush). */
export function setHeader(s: PloopState, h: PloopHeader): void {
  s.header = h;
  encodeHeader(h, s.bat.bytes);
  s.bat.headerChanged();
}

/** Copies `length` bytes of the host file from `from` to `to`, in bounded chunks. */
export async function copyHost(s: PloopState, from: number, to: number, length: number): Promise<void> {
  for (let done = 0; done < length; done += COPY_CHUNK) {
    const part = new Uint8Array(Math.min(COPY_CHUNK, length - done));
    await s.host.read(part, from + done);
    await s.host.write(part, to + done);
  }
}

/** Writes `length` zero bytes at host offset `at`, in bounded chunks. */
export async function writeZerosAt(s: PloopState, at: number, length: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(COPY_CHUNK, length));
  for (let done = 0; done < length; done += zeros.length) {
    await s.host.write(zeros.subarray(0, Math.min(zeros.length, length - done)), at + done);
  }
}
