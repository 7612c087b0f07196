/**
 * `qemu-img check` for one ploop image: the not-closed-cleanly marker, BAT
 * entries outside the file / inside the header / shared by two entries, and
 * space leaked at the end of the file; repaired as QEMU's parallels driver does.
 * Runs under the driver's exclusive gate.
 */
import type { CheckReport, RepairMode } from '../driver.js';
import { describeProblem, scanBat, type BatProblem } from './bat-scan.js';
import { SECTOR } from './header.js';
import { hostToEntry } from './layout.js';
import { copyHost, type PloopState } from './state.js';

export async function checkImage(s: PloopState, repair: RepairMode): Promise<CheckReport> {
  const fixErrors = repair === 'all';
  const fixLeaks = repair !== 'none';
  const cs = s.layout.clusterSize;
  const report: CheckReport = { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, messages: [] };
  if (s.unclean) {
    report.messages.push(`${fixErrors ? 'Repairing' : 'ERROR'} image was not closed correctly`);
    report.corruptions++;
    if (fixErrors) {
      // The in-use marker itself is rewritten as this read-write open goes on and cleared at close.
      s.unclean = false;
      report.corruptionsFixed++;
    }
  }
  let size = await s.host.size();
  let scan = scanBat(s.layout, (i) => s.bat.entry(i), size);
  for (const p of scan.problems) {
    report.messages.push(describeProblem(p, fixErrors));
    report.corruptions++;
  }
  if (fixErrors && scan.problems.length > 0) {
    await repairEntries(s, scan.problems);
    report.corruptionsFixed += scan.problems.length;
    size = await s.host.size();
    scan = scanBat(s.layout, (i) => s.bat.entry(i), size);
  }
  const extEnd = s.extHost === 0 ? 0 : s.extHost + cs;
  const imageEnd = Math.max(scan.dataEnd, extEnd);
  // QEMU sees the file length rounded up to whole sectors.
  size = Math.ceil(size / SECTOR) * SECTOR;
  if (size > imageEnd) {
    const count = Math.ceil((size - imageEnd) / cs);
    report.messages.push(`${fixLeaks ? 'Repairing' : 'ERROR'} space leaked at the end of the image ${size - imageEnd}`);
    report.leaks += count;
    if (fixLeaks) {
      await s.host.truncate(imageEnd);
      s.growth?.truncated(imageEnd);
      s.dataEnd = imageEnd;
      report.leaksFixed += count;
    }
  }
  report.imageEndOffset = imageEnd;
  report.totalClusters = s.layout.batEntries;
  report.allocatedClusters = scan.allocated;
  report.fragmentedClusters = scan.fragmented;
  report.compressedClusters = 0;
  return report;
}

/** Clears entries outside the file or inside the header; gives duplicates a copy of their own. */
async function repairEntries(s: PloopState, problems: readonly BatProblem[]): Promise<void> {
  const cs = s.layout.clusterSize;
  for (const p of problems) {
    if (p.kind !== 'duplicate') {
      s.bat.setEntry(p.index, 0);
      continue;
    }
    const to = s.dataEnd;
    s.dataEnd += cs;
    await copyHost(s, p.hostOffset, to, cs);
    s.bat.setEntry(p.index, hostToEntry(s.layout, to, s.filename));
  }
  s.badEntries = new Set();
  // Index after data: the copies are durable before the BAT points at them.
  await s.host.sync();
  await s.bat.writeSnapshot(s.host, s.bat.snapshotDirty());
  await s.host.sync();
}
