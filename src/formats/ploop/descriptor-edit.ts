/**
 * Reading DiskDescriptor.xml as a whole, changing it (snapshot, merges) and
 * writing it back as the ploop tools do (lib/xml.c ploop_store_diskdescriptor):
 * Disk_Parameters (Disk_size in sectors, Cylinders, Heads, Sectors, Padding),
 * one Storage (Start 0, End = size in sectors, Blocksize in sectors, the Images
 * with GUID, Type, File relative to the descriptor's directory), and Snapshots
 * (TopGUID, one Shot per image with its ParentGUID). The new text goes to
 * `<name>.tmp`, is synced, and renamed over the old one (then the directory is
 * synced), so a crash leaves the old or the new descriptor, never a mix.
 */
import { randomUUID } from 'node:crypto';
import { dirname } from 'node:path';
import { VdiskError } from '../../errors.js';
import { DEFAULT_TOP_GUID, elements, parseDescriptor, ROOT_PARENT_GUID, text, type DeltaRef } from './descriptor.js';
import { closeFd, fsyncFd, openFd, renamePath, unlinkPath, writeTextFd } from '../../host/fs-calls.js';

export interface DescriptorImage {
  guid: string;
  type: 'Compressed' | 'Plain';
  /** As stored: relative to the descriptor's directory unless absolute. */
  file: string;
}

export interface DescriptorShot {
  guid: string;
  parent: string;
}

/** The parts of a DiskDescriptor.xml the ploop tools write. */
export interface DescriptorModel {
  sizeSectors: number;
  cylinders: number;
  heads: number;
  /** Cluster size in sectors. */
  blockSectors: number;
  images: DescriptorImage[];
  shots: DescriptorShot[];
  topGuid: string;
}

function numberField(xml: string, tag: string, file: string, fallback?: number): number {
  const v = text(xml, tag);
  if (v === undefined && fallback !== undefined) return fallback;
  const n = v === undefined ? NaN : Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new VdiskError('ECORRUPT', `Cannot open '${file}': <${tag}> is ${JSON.stringify(v ?? null)}, not a number`, { file, field: tag });
  }
  return n;
}

/** Parses the whole descriptor; the chain must be valid (see parseDescriptor). */
export function readDescriptorModel(xml: string, file: string): DescriptorModel {
  parseDescriptor(xml, file); // validates the chain and the single <Storage>
  const params = elements(xml, 'Disk_Parameters')[0] ?? '';
  const storage = elements(xml, 'Storage')[0] ?? '';
  const sizeSectors = numberField(params, 'Disk_size', file);
  const heads = numberField(params, 'Heads', file, 16);
  const images: DescriptorImage[] = elements(storage, 'Image').map((img) => ({
    guid: text(img, 'GUID') ?? '',
    type: text(img, 'Type') === 'Plain' ? 'Plain' : 'Compressed',
    file: text(img, 'File') ?? '',
  }));
  const shots = elements(xml, 'Shot').map((s) => ({ guid: text(s, 'GUID') ?? '', parent: text(s, 'ParentGUID') ?? '' }));
  // A single image may come without a <Shot>: give it one, as the ploop tools write it.
  if (shots.length === 0 && images.length === 1) shots.push({ guid: images[0]?.guid ?? '', parent: ROOT_PARENT_GUID });
  return {
    sizeSectors,
    heads,
    cylinders: numberField(params, 'Cylinders', file, Math.floor(sizeSectors / heads / 32)),
    blockSectors: numberField(storage, 'Blocksize', file, 2048),
    images,
    shots,
    topGuid: text(xml, 'TopGUID') ?? DEFAULT_TOP_GUID,
  };
}

const escape = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c] ?? c);

/** The descriptor's text, laid out as libxml2 formats what the ploop tools write. */
export function serializeDescriptor(m: DescriptorModel): string {
  const el = (indent: number, tag: string, value: string | number): string => `${'  '.repeat(indent)}<${tag}>${escape(String(value))}</${tag}>\n`;
  const sectors = m.cylinders * m.heads > 0 ? Math.floor(m.sizeSectors / (m.cylinders * m.heads)) : 0;
  let out = '<?xml version="1.0"?>\n<Parallels_disk_image>\n  <Disk_Parameters>\n';
  out += el(2, 'Disk_size', m.sizeSectors) + el(2, 'Cylinders', m.cylinders) + el(2, 'Heads', m.heads);
  out += el(2, 'Sectors', sectors) + el(2, 'Padding', 0);
  out += '  </Disk_Parameters>\n  <StorageData>\n    <Storage>\n';
  out += el(3, 'Start', 0) + el(3, 'End', m.sizeSectors) + el(3, 'Blocksize', m.blockSectors);
  for (const img of m.images) {
    out += '      <Image>\n' + el(4, 'GUID', img.guid) + el(4, 'Type', img.type) + el(4, 'File', img.file) + '      </Image>\n';
  }
  out += '    </Storage>\n  </StorageData>\n  <Snapshots>\n' + el(2, 'TopGUID', m.topGuid);
  for (const s of m.shots) out += '    <Shot>\n' + el(3, 'GUID', s.guid) + el(3, 'ParentGUID', s.parent) + '    </Shot>\n';
  return out + '  </Snapshots>\n</Parallels_disk_image>\n';
}

/** Replaces the descriptor at `path` atomically and durably (tmp file, sync, rename, directory sync). */
export async function writeDescriptor(path: string, m: DescriptorModel): Promise<void> {
  const tmp = `${path}.tmp`;
  const fd = await openFd(tmp, 'w', 0o644);
  try {
    await writeTextFd(fd, serializeDescriptor(m));
    await fsyncFd(fd);
  } catch (e) {
    await closeFd(fd);
    await unlinkPath(tmp).catch(() => undefined);
    throw e;
  }
  await closeFd(fd);
  await renamePath(tmp, path);
  const dir = await openFd(dirname(path), 'r');
  try {
    await fsyncFd(dir);
  } finally {
    await closeFd(dir);
  }
}

/** A new GUID in the descriptor's spelling: `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`. */
export function newGuid(): string {
  return `{${randomUUID()}}`;
}

const same = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

function renameGuid(m: DescriptorModel, from: string, to: string): void {
  for (const img of m.images) if (same(img.guid, from)) img.guid = to;
  for (const s of m.shots) {
    if (same(s.guid, from)) s.guid = to;
    if (same(s.parent, from)) s.parent = to;
  }
  if (same(m.topGuid, from)) m.topGuid = to;
}

function imageOf(m: DescriptorModel, guid: string, file: string): DescriptorImage {
  const img = m.images.find((i) => same(i.guid, guid));
  if (!img) throw new VdiskError('EINVAL', `'${file}': no image with GUID ${guid}`, { file, field: 'GUID' });
  return img;
}

/**
 * A snapshot, as `ploop snapshot` records it: the current top keeps its file but
 * takes the new snapshot GUID; a new empty delta `file` becomes the top under the
 * top GUID, its parent being the snapshot. Returns the snapshot's GUID.
 */
export function addSnapshot(m: DescriptorModel, file: string): string {
  const snapshot = newGuid();
  const top = m.topGuid;
  renameGuid(m, top, snapshot);
  m.images.push({ guid: top, type: 'Compressed', file });
  m.shots.push({ guid: top, parent: snapshot });
  m.topGuid = top;
  return snapshot;
}

function removeImage(m: DescriptorModel, guid: string): void {
  m.images = m.images.filter((i) => !same(i.guid, guid));
  m.shots = m.shots.filter((s) => !same(s.guid, guid));
}

/**
 * After a backward merge of the top delta into its parent: the parent takes the
 * top's GUID (so TopGUID is unchanged) and the top delta leaves the descriptor.
 * Returns the dropped delta's file as stored.
 */
export function dropMergedTop(m: DescriptorModel, descriptorFile: string): string {
  const top = imageOf(m, m.topGuid, descriptorFile);
  const shot = m.shots.find((s) => same(s.guid, top.guid));
  if (!shot || same(shot.parent, ROOT_PARENT_GUID)) {
    throw new VdiskError('EINVAL', `'${descriptorFile}': the top delta has no delta below it to merge into`, { file: descriptorFile });
  }
  const file = top.file;
  const topGuid = top.guid;
  removeImage(m, topGuid);
  renameGuid(m, shot.parent, topGuid);
  return file;
}

/**
 * After a forward merge of delta `guid` into the delta above it: the delta above
 * takes `guid`'s parent and `guid` leaves the descriptor. Returns its file as stored.
 */
export function dropMergedIntoChild(m: DescriptorModel, guid: string, descriptorFile: string): string {
  const merged = imageOf(m, guid, descriptorFile);
  const own = m.shots.find((s) => same(s.guid, guid));
  const child = m.shots.find((s) => same(s.parent, guid));
  if (!own || !child) {
    throw new VdiskError('EINVAL', `'${descriptorFile}': delta ${guid} has no delta above it to merge into`, { file: descriptorFile });
  }
  child.parent = own.parent;
  removeImage(m, guid);
  return merged.file;
}

/** The chain of a model, bottom first (files as stored). */
export function modelChain(m: DescriptorModel, descriptorFile: string): DeltaRef[] {
  return parseDescriptor(serializeDescriptor(m), descriptorFile);
}
