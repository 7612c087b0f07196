/**
 * --image-opts: the image operand is an option string
 * ("driver=qcow2,file.filename=disk.qcow2,l2-cache-size=4M") instead of a
 * file name, for qemu-img's commands and qemu-io alike.
 *
 * vdisk's format drivers read their image through the host file, so the
 * protocol layer (`file.*`) can only be the `file` driver; of its options
 * filename and cache.direct / cache.no-flush are applied, locking=on|auto
 * is what vdisk does anyway, and the rest are refused by name. The format
 * layer's options are kept for the opener: generic ones (read-only,
 * force-share, cache.*, backing="") are applied there, qcow2's go to
 * qcow2-tuning.ts, and any other is checked against the opened format
 * (driver-options.ts).
 */
import { toFormatName } from './commands/create.js';
import { fileProtocolProblem, isFileProtocol } from '../host/file-protocol.js';
import type { FormatName } from '../formats/driver.js';
import { type DriverOptions, parseDriverOptions } from './qemu-io/driver-options.js';

/** The options of the `file` protocol layer vdisk applies. */
export interface ProtocolOptions {
  readonly cacheDirect?: string;
  readonly cacheNoFlush?: string;
}

export interface ImageOptions {
  readonly filename: string;
  /** The format named by `driver`; undefined: probed. */
  readonly format: FormatName | undefined;
  /** The format layer's options (everything but driver and file.*), each with its last value. */
  readonly options: DriverOptions;
  readonly protocol: ProtocolOptions;
}

export type ImageOptionsResult =
  | ({ readonly ok: true; readonly warnings: readonly string[] } & ImageOptions)
  | { readonly ok: false; readonly message: string; readonly warnings: readonly string[] };

/** QEMU's block drivers that vdisk does not implement: named as such, not as unknown. */
const QEMU_ONLY_FORMATS: readonly string[] = ['bochs', 'cloop', 'dmg', 'file', 'luks', 'qcow', 'qed', 'vdi', 'vhdx', 'vmdk', 'vpc', 'vvfat', 'nbd'];
const QEMU_ONLY_PROTOCOLS: readonly string[] = ['host_cdrom', 'nbd', 'http', 'https', 'ftp', 'ftps', 'ssh', 'iscsi', 'rbd', 'gluster', 'nvme', 'null-co', 'null-aio', 'blkdebug'];
/** The file driver's options that change how QEMU does its I/O, which vdisk does its own way. */
const UNSUPPORTED_FILE_KEYS: readonly string[] = ['aio', 'aio-max-batch', 'pr-manager', 'drop-cache', 'x-check-cache-dropped'];

/** Why the `file` layer cannot be opened as given, or undefined when it can. */
function protocolProblem(values: ReadonlyMap<string, string>): string | undefined {
  const fileDriver = values.get('file.driver');
  if (fileDriver !== undefined && !isFileProtocol(fileDriver)) {
    return QEMU_ONLY_PROTOCOLS.includes(fileDriver)
      ? `vdisk opens images through the 'file' and 'host_device' protocol drivers only, not '${fileDriver}'`
      : `Unknown driver '${fileDriver}'`;
  }
  const filename = values.get('file.filename');
  if (filename === undefined) return 'A block device must be specified for "file"';
  if (filename === '') return "The 'file' block driver requires a file name";
  // Named, the driver must fit the file; left out, it is the one that fits (QEMU's probe).
  const kind = fileDriver === undefined ? undefined : fileProtocolProblem(fileDriver, filename);
  if (kind !== undefined) return kind;
  for (const [key, value] of values) {
    if (!key.startsWith('file.')) continue;
    const option = key.slice('file.'.length);
    if (['filename', 'driver', 'cache.direct', 'cache.no-flush'].includes(option)) continue;
    if (option === 'locking') {
      if (value === 'off') return "vdisk always takes QEMU's image locks: file.locking=off is not supported (-U or force-share=on shares a read-only image)";
      if (value !== 'on' && value !== 'auto') return `invalid parameter value: ${value}`;
      continue;
    }
    if (UNSUPPORTED_FILE_KEYS.includes(option)) return `vdisk does not support the option '${key}'`;
    return `Block protocol 'file' doesn't support the option '${option}'`;
  }
  return undefined;
}

/**
 * Parses an --image-opts operand. `message` is what follows "Could not open
 * '<text>': " (qemu-img) or "can't open: " (qemu-io) when it names no image
 * vdisk can open.
 */
export function parseImageOptions(text: string, options: { readonly impliedFile: boolean }): ImageOptionsResult {
  const parsed = parseDriverOptions([text], options.impliedFile ? 'file' : undefined);
  const { values, warnings } = parsed;
  const fail = (message: string): ImageOptionsResult => ({ ok: false, message, warnings });
  const driver = values.get('driver');
  const fileGiven = [...values.keys()].some((key) => key === 'file' || key.startsWith('file.'));
  if (driver === undefined && !fileGiven) return fail('Must specify either driver or file');
  const format = driver === undefined ? undefined : toFormatName(driver);
  if (driver !== undefined && format === undefined) {
    return fail(QEMU_ONLY_FORMATS.includes(driver) ? `Driver '${driver}' is not supported by vdisk` : `Unknown driver '${driver}'`);
  }
  const reference = values.get('file');
  if (reference !== undefined) {
    return fail(
      [...values.keys()].some((key) => key.startsWith('file.'))
        ? 'Cannot reference an existing block device with additional options or a new filename'
        : `Cannot find device='${reference}' nor node-name='${reference}'`,
    );
  }
  const problem = protocolProblem(values);
  if (problem !== undefined) return fail(problem);
  const rest = new Map([...values].filter(([key]) => !key.startsWith('file.')));
  const cacheDirect = values.get('file.cache.direct');
  const cacheNoFlush = values.get('file.cache.no-flush');
  return {
    ok: true,
    warnings,
    filename: values.get('file.filename') ?? '',
    format,
    options: { values: rest, warnings: [] },
    protocol: { ...(cacheDirect !== undefined ? { cacheDirect } : {}), ...(cacheNoFlush !== undefined ? { cacheNoFlush } : {}) },
  };
}
