/**
 * The table of formats vdisk knows, and the probe that picks one from a file's
 * first bytes. Raw never probes: it is what remains when nothing else matches.
 */
import { VdiskError } from '../errors.js';
import type { FormatName } from './driver.js';
import { isDescriptor } from './ploop/descriptor.js';
import { isPloopHeader } from './ploop/header.js';
import { qcow2Format } from './qcow2/index.js';
import { rawFormat } from './raw/index.js';
import type { FormatModule } from './registry-types.js';

/**
 * The ploop driver (some twenty modules, and node:crypto) loads when a ploop
 * image is opened or created: every module loaded costs each command's start,
 * and most never meet a ploop image. The probe needs only the two codecs.
 */
const ploopFormat: FormatModule = {
  name: 'ploop',
  probe: (head) => isPloopHeader(head) || isDescriptor(head),
  open: async (path, options) => (await import('./ploop/index.js')).ploopFormat.open(path, options),
  create: async (path, options) => (await import('./ploop/index.js')).ploopFormat.create(path, options),
};

/** Probed in this order; raw is the fallback and is not listed. */
const PROBED: readonly FormatModule[] = [qcow2Format, ploopFormat];

const BY_NAME: ReadonlyMap<string, FormatModule> = new Map<string, FormatModule>([
  ['raw', rawFormat],
  ...PROBED.map((m): [string, FormatModule] => [m.name, m]),
]);

/** Names users may type for a format, mapped to vdisk's name ('parallels' is QEMU's name for ploop). */
const ALIASES: Readonly<Record<string, FormatName>> = { parallels: 'ploop' };

/** How many bytes of a file the probe looks at. */
export const PROBE_SIZE = 4096;

/** The format module for a name as given on a command line; EINVAL for an unknown one. */
export function formatByName(name: string): FormatModule {
  const module = BY_NAME.get(ALIASES[name] ?? name);
  if (!module) {
    const known = [...BY_NAME.keys()].join(', ');
    throw new VdiskError('EINVAL', `Unknown file format '${name}' (known: ${known})`, { field: 'format' });
  }
  return module;
}

/** Names of the formats this build can open. */
export function formatNames(): FormatName[] {
  return [...BY_NAME.values()].map((m) => m.name);
}

const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb]; // "QFI\xfb"
const PLOOP_SIGNATURES = ['WithoutFreeSpace', 'WithouFreSpacExt'];

function startsWith(head: Uint8Array, bytes: readonly number[]): boolean {
  return head.length >= bytes.length && bytes.every((b, i) => head[i] === b);
}

/**
 * Decides a file's format from its first bytes (at least 512; PROBE_SIZE is
 * plenty): qcow2 by its magic, ploop by its header signature, else raw. The
 * signatures are checked here even for formats whose module is not registered,
 * so that such a file is refused as unsupported rather than opened as raw.
 */
export function probeFormat(head: Uint8Array): FormatName {
  for (const m of PROBED) if (m.probe(head)) return m.name;
  if (startsWith(head, QCOW2_MAGIC)) return 'qcow2';
  for (const sig of PLOOP_SIGNATURES) {
    if (startsWith(head, [...sig].map((c) => c.charCodeAt(0)))) return 'ploop';
  }
  return 'raw';
}
