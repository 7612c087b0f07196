/** Preallocation of a raw file's new range, as QEMU's file driver does it. */
import { VdiskError } from '../../errors.js';
import type { HostFile } from '../../host/host-file.js';

export type RawPreallocation = 'off' | 'falloc' | 'full';

/** Checks the `preallocation` option; raw knows off, falloc and full (not metadata). */
export function parseRawPreallocation(value: string | undefined, file: string): RawPreallocation {
  const v = value ?? 'off';
  if (v === 'off' || v === 'falloc' || v === 'full') return v;
  throw new VdiskError('ENOTSUP', `Unsupported preallocation mode: ${v}`, { file, field: 'preallocation' });
}

const FULL_CHUNK = 1024 * 1024;

/**
 * Fills [from, to) of a file just grown to `to`: falloc reserves the space,
 * full writes zeros. A file grown from empty also gets its first block written
 * (512 bytes, or 4 KiB when it is at least that big), as QEMU does, so that
 * alignment probing with O_DIRECT finds real blocks.
 */
export async function preallocateRange(
  host: HostFile,
  range: { readonly from: number; readonly to: number; readonly mode: RawPreallocation },
): Promise<void> {
  const { from, to, mode } = range;
  if (to <= from) return;
  if (mode === 'falloc') {
    if (!(await host.allocate(from, to - from))) {
      throw new VdiskError('ENOTSUP', `Could not preallocate new data of '${host.path}': the host file system cannot allocate space`, {
        file: host.path,
        field: 'preallocation',
      });
    }
  } else if (mode === 'full') {
    const zeros = new Uint8Array(Math.min(FULL_CHUNK, to - from));
    for (let pos = from; pos < to; pos += zeros.length) {
      const n = Math.min(zeros.length, to - pos);
      await host.write(n === zeros.length ? zeros : zeros.subarray(0, n), pos);
    }
  }
  if (from === 0 && mode !== 'full') {
    await host.write(new Uint8Array(to < 4096 ? Math.min(512, to) : 4096), 0);
  }
}
