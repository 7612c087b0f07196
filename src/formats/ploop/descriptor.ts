/**
 * DiskDescriptor.xml (QEMU docs/interop/prl-xml.rst; written by the ploop tools):
 * which delta files make up a disk, and in which order. Only the parts needed to
 * open the chain are read: the images of the single <Storage> element and the
 * <Snapshots> tree from the top snapshot down to the root.
 */
import { VdiskError } from '../../errors.js';

/** The top snapshot's GUID when <TopGUID> is absent. */
export const DEFAULT_TOP_GUID = '{5fbaabe3-6958-40ff-92a7-860e329aab41}';
export const ROOT_PARENT_GUID = '{00000000-0000-0000-0000-000000000000}';
/** Refuse descriptors beyond this size: they are small XML files. */
export const MAX_DESCRIPTOR_BYTES = 1024 * 1024;

export interface DeltaRef {
  readonly guid: string;
  /** As written in the descriptor, relative to the descriptor's directory unless absolute. */
  readonly file: string;
  /** `Compressed` = a ploop delta, `Plain` = a raw base image (level 0 only). */
  readonly type: 'Compressed' | 'Plain';
}

/** The contents of every <tag> element of `xml` (no nesting of the same tag). */
export function elements(xml: string, tag: string): string[] {
  const out: string[] = [];
  const re = new RegExp(`<${tag}(?:\\s[^>]*)?>([\\s\\S]*?)</${tag}>`, 'g');
  for (let m = re.exec(xml); m; m = re.exec(xml)) out.push(m[1] ?? '');
  return out;
}

/** The trimmed, entity-decoded text of the first <tag> element, if any. */
export function text(xml: string, tag: string): string | undefined {
  const v = elements(xml, tag)[0];
  return v === undefined ? undefined : decodeEntities(v.trim());
}

function decodeEntities(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos);/g, (_, e: string) => ({ lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" })[e] ?? '');
}

/** True when `head` looks like a DiskDescriptor.xml. */
export function isDescriptor(head: Uint8Array): boolean {
  const s = Buffer.from(head.subarray(0, 512)).toString('latin1');
  return s.includes('<Parallels_disk_image');
}

/** The deltas of the disk, bottom (root) first, top last. */
export function parseDescriptor(xml: string, file: string): DeltaRef[] {
  const fail = (why: string, field: string): VdiskError =>
    new VdiskError('ECORRUPT', `Cannot open '${file}': ${why}`, { file, field });
  if (!xml.includes('<Parallels_disk_image')) throw fail('not a Parallels disk descriptor', 'Parallels_disk_image');
  const storages = elements(xml, 'Storage');
  if (storages.length !== 1) {
    throw new VdiskError('ENOTSUP', `Cannot open '${file}': ${storages.length} <Storage> elements (only single-storage disks are supported)`, {
      file,
      field: 'Storage',
    });
  }
  const images = new Map<string, DeltaRef>();
  for (const img of elements(storages[0] ?? '', 'Image')) {
    const guid = text(img, 'GUID');
    const name = text(img, 'File');
    const type = text(img, 'Type');
    if (!guid || !name) throw fail('an <Image> lacks <GUID> or <File>', 'Image');
    if (type !== 'Compressed' && type !== 'Plain') throw fail(`image ${guid} has unknown <Type> ${JSON.stringify(type)}`, 'Type');
    images.set(guid.toLowerCase(), { guid, file: name, type });
  }
  const parents = new Map<string, string>();
  for (const shot of elements(xml, 'Shot')) {
    const guid = text(shot, 'GUID');
    const parent = text(shot, 'ParentGUID');
    if (!guid || !parent) throw fail('a <Shot> lacks <GUID> or <ParentGUID>', 'Shot');
    parents.set(guid.toLowerCase(), parent.toLowerCase());
  }
  const chain: DeltaRef[] = [];
  let guid = (text(xml, 'TopGUID') ?? DEFAULT_TOP_GUID).toLowerCase();
  // Walk from the top to the root; the chain can be no longer than the image list (no cycles).
  while (guid !== ROOT_PARENT_GUID) {
    const ref = images.get(guid);
    if (!ref) throw fail(`snapshot ${guid} names no <Image>`, 'GUID');
    if (chain.length >= images.size) throw fail('the snapshot tree has a cycle', 'ParentGUID');
    chain.push(ref);
    const parent = parents.get(guid);
    if (parent === undefined) {
      if (images.size === 1) break; // a single image needs no <Shot>
      throw fail(`snapshot ${guid} has no <Shot> entry`, 'Shot');
    }
    guid = parent;
  }
  if (chain.length === 0) throw fail('no images', 'Image');
  chain.reverse();
  chain.forEach((d, level) => {
    if (d.type === 'Plain' && level !== 0) throw fail(`raw image ${d.file} is allowed only as the base`, 'Type');
  });
  return chain;
}
