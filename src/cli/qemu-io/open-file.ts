import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import type { CacheMode, FormatName } from '../../formats/driver.js';
import type { ImageNode } from '../../block/types.js';
import { type CliContext, reportError } from '../context.js';
import { openErrorText } from '../open-error.js';
import { qemuFormatName } from '../format-name.js';
import { type DriverOptions, unsupportedOption } from './driver-options.js';
import { type ProtocolOptions, parseImageOptions } from '../image-opts.js';
import { openSettings } from '../open-settings.js';
import type { EngineOpenOptions } from '../qcow2-tuning.js';
import type { IoSession } from './session.js';
import { closeFd, openFd, unlinkPath } from '../../host/fs-calls.js';

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
  /** The file.* options of an --image-opts string that vdisk applies. */
  readonly protocol?: ProtocolOptions;
}

/** What the command line or `open` gives besides the image itself. */
export type OpenFlags = Omit<OpenSettings, 'filename' | 'format' | 'options' | 'protocol' | 'imageOpts'>;

/** Whether the image is opened with O_DIRECT. */
function directIo(cache: CacheMode | undefined): boolean {
  return cache === 'none' || cache === 'directsync' || cache === 'none-unsafe';
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
      await closeFd(await openFd(path, 'wx', 0o600));
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
    // Under -s the image itself is only read: its options are checked as for a read-only open.
    const applied = openSettings(settings.options ?? { values: new Map(), warnings: [] }, settings.protocol ?? {}, {
      readOnly: settings.readOnly || settings.snapshot === true,
      cache: settings.cache,
      forceShare: settings.forceShare,
    });
    if (!applied.ok) return fail(applied.message);
    for (const w of applied.warnings) reportError(this.ctx, w);
    const engineOptions: EngineOpenOptions = { ...applied.settings, readOnly: settings.readOnly, ...(settings.format ? { format: settings.format } : {}) };
    if (settings.nativeAio && !directIo(engineOptions.cache)) return fail('aio=native was specified, but it requires cache.direct=on, which was not specified.');
    if (settings.copyOnRead && settings.readOnly) return fail("Can't use copy-on-read on read-only device");
    let node: ImageNode;
    let format: FormatName;
    try {
      if (settings.snapshot) {
        const opened = await this.openSnapshot(settings.filename, engineOptions);
        node = opened.node;
        format = opened.baseFormat;
      } else {
        node = await this.ctx.engine.openImage(filename, engineOptions);
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
  private async openSnapshot(filename: string, options: EngineOpenOptions): Promise<{ node: ImageNode; baseFormat: FormatName }> {
    const cache = options.cache ? { cache: options.cache } : {};
    const base = await this.ctx.engine.openImage(filename, { ...options, readOnly: true });
    const size = base.length;
    const baseFormat = base.format;
    await base.close();
    const overlay = await reserveTempName();
    try {
      await this.ctx.engine.createImage(overlay, 'qcow2', { size, options: {}, backingFile: resolve(filename), backingFormat: baseFormat });
      const node = await this.ctx.engine.openImage(overlay, { format: 'qcow2', readOnly: options.readOnly ?? false, ...cache });
      this.snapshotOverlay = overlay;
      this.snapshotReopened = false;
      return { node, baseFormat };
    } finally {
      await unlinkPath(overlay).catch(() => undefined);
    }
  }

  /**
   * Opens the image an --image-opts string names (the command line's operand
   * or `open`'s); prints qemu-io's "can't open" and returns false when it
   * names none.
   */
  async openOptionString(text: string, flags: OpenFlags): Promise<boolean> {
    const opts = parseImageOptions(text, { impliedFile: false });
    for (const w of opts.warnings) reportError(this.ctx, w);
    if (!opts.ok) {
      reportError(this.ctx, `can't open: ${opts.message}`);
      return false;
    }
    return this.open({ ...flags, filename: opts.filename, format: opts.format, options: opts.options, protocol: opts.protocol, imageOpts: true });
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
