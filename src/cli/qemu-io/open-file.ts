import { randomBytes } from 'node:crypto';
import { open as openFile, unlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { CacheMode, FormatName } from '../../formats/driver.js';
import type { ImageNode } from '../../block/types.js';
import { type CliContext, reportError } from '../context.js';
import { openErrorText } from '../open-error.js';
import { booleanOption, type DriverOptions, unsupportedOption } from './driver-options.js';
import type { IoSession } from './session.js';

/** How qemu-io opens (and reopens) its image. */
export interface OpenSettings {
  readonly filename: string;
  readonly format: FormatName | undefined;
  readonly readOnly: boolean;
  readonly forceShare: boolean;
  readonly cache: CacheMode | undefined;
  /** -s: writes go to a temporary qcow2 overlay, dropped on close; the image itself is only read. */
  readonly snapshot?: boolean;
  /** -k or -i native: Linux AIO, which QEMU allows only with O_DIRECT (cache.direct=on). */
  readonly nativeAio?: boolean;
  /** Given as --image-opts: errors say "can't open: ..." without naming a device. */
  readonly imageOpts?: boolean;
  /** -C: reads copy what the top image lacks into it. */
  readonly copyOnRead?: boolean;
  /** The -o list beyond the driver (checked against the opened format). */
  readonly options?: DriverOptions;
}

/** QEMU's name of a format in messages (vdisk's ploop is QEMU's parallels). */
function qemuFormatName(format: FormatName): string {
  return format === 'ploop' ? 'parallels' : format;
}

/** Whether the image is opened with O_DIRECT: the cache mode, unless -o cache.direct says otherwise. */
function directIo(settings: OpenSettings): boolean {
  const option = settings.options ? booleanOption(settings.options, 'cache.direct') : undefined;
  return option ?? (settings.cache === 'none' || settings.cache === 'directsync');
}

/**
 * A fresh name for a snapshot overlay, as QEMU picks them ($TMPDIR or
 * /var/tmp, "vl." and six random characters), created empty so no other
 * process takes it.
 */
async function reserveTempName(): Promise<string> {
  const dir = process.env.TMPDIR ?? '/var/tmp';
  const letters = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  for (;;) {
    const suffix = [...randomBytes(6)].map((b) => letters[b % letters.length] ?? 'X').join('');
    const path = `${dir}/vl.${suffix}`;
    try {
      await (await openFile(path, 'wx', 0o600)).close();
      return path;
    } catch (e) {
      if (!(e instanceof Error && 'code' in e && e.code === 'EEXIST')) throw e;
    }
  }
}

export const RAW_PROBE_WARNING = (file: string): string =>
  `WARNING: Image format was not specified for '${file}' and probing guessed raw.\n` +
  '         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n' +
  "         Specify the 'raw' format explicitly to remove the restrictions.\n";

/**
 * The image a qemu-io session works on: none until `open` (or the command
 * line's file), none again after `close`.
 */
export class IoFile {
  session: IoSession | undefined;
  settings: OpenSettings | undefined;

  constructor(
    private readonly ctx: CliContext,
    private readonly quiet: boolean,
    /** The session was started with --image-opts: `open` takes an option string too. */
    readonly imageOpts = false,
  ) {}

  get readOnly(): boolean {
    return this.settings?.readOnly ?? false;
  }

  /** The overlay of a -s session: already unlinked, so reopening it by name fails as in QEMU. */
  snapshotOverlay: string | undefined;
  /** A reopen of the -s overlay has succeeded once; QEMU fails every later one. */
  snapshotReopened = false;

  /** openfile(): prints qemu-io's error and returns false when the image cannot be opened. */
  async open(settings: OpenSettings): Promise<boolean> {
    const { filename } = settings;
    if (this.session) {
      reportError(this.ctx, "file open already, try 'help close'");
      return false;
    }
    const fail = (message: string): false => {
      reportError(this.ctx, settings.imageOpts ? `can't open: ${message}` : `can't open device ${filename}: ${message}`);
      return false;
    };
    // Under -s the image itself is opened read-only (the overlay takes the writes), so sharing it is allowed.
    if (settings.forceShare && !settings.readOnly && !settings.snapshot) return fail('force-share=on can only be used with read-only images');
    if (settings.nativeAio && !directIo(settings)) return fail('aio=native was specified, but it requires cache.direct=on, which was not specified.');
    if (settings.options && booleanOption(settings.options, 'read-only') === true && !settings.readOnly) return fail('Block node is read-only');
    if (settings.copyOnRead && settings.readOnly) return fail("Can't use copy-on-read on read-only device");
    let node: ImageNode;
    let format: FormatName;
    try {
      if (settings.snapshot) {
        const opened = await this.openSnapshot(settings);
        node = opened.node;
        format = opened.baseFormat;
      } else {
        node = await this.ctx.engine.openImage(filename, {
          ...(settings.format ? { format: settings.format } : {}),
          readOnly: settings.readOnly,
          forceShare: settings.forceShare,
          ...(settings.cache ? { cache: settings.cache } : {}),
        });
        format = node.format;
        // QEMU warns about a probed raw image only when it may write block 0 (a snapshot overlay protects it).
        if (settings.format === undefined && format === 'raw' && !settings.readOnly && !this.quiet) this.ctx.out.stderr(RAW_PROBE_WARNING(filename));
      }
    } catch (e) {
      return fail(openErrorText(filename, e));
    }
    const unsupported = settings.options ? unsupportedOption(settings.options, format) : undefined;
    if (unsupported !== undefined) {
      await node.close();
      this.snapshotOverlay = undefined;
      return fail(`Block format '${qemuFormatName(format)}' does not support the option '${unsupported}'`);
    }
    this.session = { node, out: this.ctx.out, quietOpen: this.quiet, copyOnRead: settings.copyOnRead === true };
    this.settings = settings;
    return true;
  }

  /**
   * -s: the image is opened read-only as the backing file of a new qcow2
   * overlay in the temporary directory; the overlay is unlinked as soon as it
   * is open, so it disappears with the session however that ends.
   */
  private async openSnapshot(settings: OpenSettings): Promise<{ node: ImageNode; baseFormat: FormatName }> {
    const cache = settings.cache ? { cache: settings.cache } : {};
    const base = await this.ctx.engine.openImage(settings.filename, {
      ...(settings.format ? { format: settings.format } : {}),
      readOnly: true,
      forceShare: settings.forceShare,
      ...cache,
    });
    const size = base.length;
    const baseFormat = base.format;
    await base.close();
    const overlay = await reserveTempName();
    try {
      await this.ctx.engine.createImage(overlay, 'qcow2', { size, options: {}, backingFile: resolve(settings.filename), backingFormat: baseFormat });
      const node = await this.ctx.engine.openImage(overlay, { format: 'qcow2', readOnly: settings.readOnly, ...cache });
      this.snapshotOverlay = overlay;
      this.snapshotReopened = false;
      return { node, baseFormat };
    } finally {
      await unlink(overlay).catch(() => undefined);
    }
  }

  /** Closes the image (flushing it); the session has no file afterwards. */
  async close(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    this.settings = undefined;
    this.snapshotOverlay = undefined;
    await session?.node.close();
  }

  /** Forgets the image without flushing or closing it, as a crash would (qemu-io's abort). */
  drop(): void {
    this.session = undefined;
    this.settings = undefined;
    this.snapshotOverlay = undefined;
  }
}
