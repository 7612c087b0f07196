/**
 * Allocation of a new cluster with copy-on-write from below, apart from the
 * driver so the crash-safety order (data first, then the BAT entry) is in one
 * small place. The driver calls this with the cluster's allocation marked in
 * flight, so no other request allocates the same cluster meanwhile.
 */
import { batPageOf, hostToEntry } from './layout.js';
import { COPY_CHUNK, writeZerosAt, type PloopState } from './state.js';

/** Reads what lies below the image at guest offset `pos` into `out`. */
export type ReadBelow = (pos: number, out: Uint8Array) => Promise<void>;

/** One write into a cluster: `data`, or `n` zero bytes when null, at `inCluster`. */
export interface ClusterPiece {
  readonly index: number;
  readonly inCluster: number;
  readonly data: Uint8Array | null;
  readonly n: number;
}

/** Appends a new cluster holding the piece and what lies below around it, then points the BAT at it. */
export async function allocateCluster(s: PloopState, readBelow: ReadBelow, piece: ClusterPiece): Promise<void> {
  const { index, inCluster, data, n } = piece;
  const cs = s.layout.clusterSize;
  const host = s.dataEnd;
  const entry = hostToEntry(s.layout, host, s.filename);
  s.dataEnd += cs;
  await s.growth?.ensure(host + cs);
  const guest = index * cs;
  if (cs <= COPY_CHUNK) {
    const head = new Uint8Array(inCluster);
    const tail = new Uint8Array(cs - inCluster - n);
    await readBelow(guest, head);
    await readBelow(guest + inCluster + n, tail);
    await s.host.writev([head, data ?? new Uint8Array(n), tail], host);
  } else {
    await copyBelow(s, readBelow, { guest, host, length: inCluster });
    if (data) await s.host.write(data, host + inCluster);
    else await writeZerosAt(s, host + inCluster, n);
    await copyBelow(s, readBelow, { guest: guest + inCluster + n, host: host + inCluster + n, length: cs - inCluster - n });
  }
  // Index after data: the entry changes only once the data write has completed.
  await s.bat.lock(batPageOf(index)).run(async () => s.bat.setEntry(index, entry));
}

/** Copies `length` bytes from below the image at `guest` to `host`, in bounded chunks. */
async function copyBelow(
  s: PloopState,
  readBelow: ReadBelow,
  range: { readonly guest: number; readonly host: number; readonly length: number },
): Promise<void> {
  for (let done = 0; done < range.length; done += COPY_CHUNK) {
    const part = new Uint8Array(Math.min(COPY_CHUNK, range.length - done));
    await readBelow(range.guest + done, part);
    await s.host.write(part, range.host + done);
  }
}
