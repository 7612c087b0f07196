/**
 * One pass over a BAT, classifying every entry: the basis of open-time
 * validation and of `check`. Pure.
 */
import { entryToHost, type PloopLayout } from './layout.js';

export type BatProblemKind =
  /** The cluster does not lie wholly inside the file. */
  | 'outside'
  /** The cluster starts inside the header/BAT area (before the data area). */
  | 'header'
  /** Another, earlier entry already points at the same host cluster. */
  | 'duplicate';

export interface BatProblem {
  readonly index: number;
  readonly kind: BatProblemKind;
  readonly hostOffset: number;
}

export interface BatScan {
  readonly problems: BatProblem[];
  /** Entries that point inside the file (what qemu-img check counts as allocated). */
  readonly allocated: number;
  readonly fragmented: number;
  /** End of the highest cluster referenced inside the file, at least the data start. */
  readonly dataEnd: number;
}

/** Scans `count` entries read through `entryAt` against a file of `fileSize` bytes. */
export function scanBat(layout: PloopLayout, entryAt: (index: number) => number, fileSize: number): BatScan {
  const problems: BatProblem[] = [];
  const seen = new Set<number>();
  let allocated = 0;
  let fragmented = 0;
  let dataEnd = layout.dataStart;
  let prev = -1;
  for (let i = 0; i < layout.batEntries; i++) {
    const entry = entryAt(i);
    if (entry === 0) {
      prev = -1;
      continue;
    }
    const host = entryToHost(layout, entry);
    if (host + layout.clusterSize > fileSize) {
      problems.push({ index: i, kind: 'outside', hostOffset: host });
      prev = -1;
      continue;
    }
    allocated++;
    if (prev >= 0 && prev + layout.clusterSize !== host) fragmented++;
    prev = host;
    dataEnd = Math.max(dataEnd, host + layout.clusterSize);
    if (host < layout.dataStart) problems.push({ index: i, kind: 'header', hostOffset: host });
    else if (seen.has(host)) problems.push({ index: i, kind: 'duplicate', hostOffset: host });
    else seen.add(host);
  }
  return { problems, allocated, fragmented, dataEnd };
}

/** qemu-img check's wording for one problem. */
export function describeProblem(p: BatProblem, repairing: boolean): string {
  const verb = repairing ? 'Repairing' : 'ERROR';
  switch (p.kind) {
    case 'outside':
      return `${verb} cluster ${p.index} is outside image`;
    case 'header':
      return `${verb} cluster ${p.index} points into the image header/BAT area (offset 0x${p.hostOffset.toString(16)})`;
    case 'duplicate':
      return `${verb} duplicate offset in BAT entry ${p.index}`;
  }
}
