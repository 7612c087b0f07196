import type { CacheMode, FormatName } from '../../formats/driver.js';
import { type CliContext, reportError } from '../context.js';
import { openErrorText } from '../open-error.js';
import type { IoSession } from './session.js';

/** How qemu-io opens (and reopens) its image. */
export interface OpenSettings {
  readonly filename: string;
  readonly format: FormatName | undefined;
  readonly readOnly: boolean;
  readonly forceShare: boolean;
  readonly cache: CacheMode | undefined;
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
  ) {}

  get readOnly(): boolean {
    return this.settings?.readOnly ?? false;
  }

  /** openfile(): prints qemu-io's error and returns false when the image cannot be opened. */
  async open(settings: OpenSettings): Promise<boolean> {
    const { filename } = settings;
    if (this.session) {
      reportError(this.ctx, "file open already, try 'help close'");
      return false;
    }
    if (settings.forceShare && !settings.readOnly) {
      reportError(this.ctx, `can't open device ${filename}: force-share=on can only be used with read-only images`);
      return false;
    }
    try {
      const node = await this.ctx.engine.openImage(filename, {
        ...(settings.format ? { format: settings.format } : {}),
        readOnly: settings.readOnly,
        forceShare: settings.forceShare,
        ...(settings.cache ? { cache: settings.cache } : {}),
      });
      // QEMU warns about a probed raw image only when it may write block 0.
      if (settings.format === undefined && node.format === 'raw' && !settings.readOnly && !this.quiet) this.ctx.out.stderr(RAW_PROBE_WARNING(filename));
      this.session = { node, out: this.ctx.out, quietOpen: this.quiet };
      this.settings = settings;
      return true;
    } catch (e) {
      reportError(this.ctx, `can't open device ${filename}: ${openErrorText(filename, e)}`);
      return false;
    }
  }

  /** Closes the image (flushing it); the session has no file afterwards. */
  async close(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    this.settings = undefined;
    await session?.node.close();
  }

  /** Forgets the image without flushing or closing it, as a crash would (qemu-io's abort). */
  drop(): void {
    this.session = undefined;
    this.settings = undefined;
  }
}
