import type { CacheMode } from '../../formats/driver.js';
import { cacheOption } from '../cache-mode.js';
import { type CliContext, reportError, reportUsage } from '../context.js';
import { parseCreateOptions, splitOptionString, wantsHelp } from '../create-options.js';
import { describeError } from '../errors-text.js';
import { ProgressPrinter } from '../format/progress.js';
import { getopt } from '../getopt.js';
import { openForWriting } from '../open-writable.js';

/** qcow2's amend options with their help, in the order qemu-img prints them. */
const QCOW2_AMEND_OPTIONS: ReadonlyArray<readonly [string, string]> = [
  ['backing_file=<str>', 'File name of a base image'],
  ['backing_fmt=<str>', 'Image format of the base image'],
  ['compat=<str>', 'Compatibility level (v2 [0.10] or v3 [1.1])'],
  ['data_file=<str>', 'File name of an external data file'],
  ['data_file_raw=<bool (on/off)>', 'The external data file must stay valid as a raw image'],
  ['encrypt.iter-time=<num>', 'Time to spend in PBKDF in milliseconds'],
  ['encrypt.keyslot=<num>', 'Select a single keyslot to modify explicitly'],
  ['encrypt.new-secret=<str>', 'New secret to set in the matching keyslots. Empty string to erase'],
  ['encrypt.old-secret=<str>', 'Select all keyslots that match this password'],
  ['encrypt.state=<str>', 'Select new state of affected keyslots (active/inactive)'],
  ['lazy_refcounts=<bool (on/off)>', 'Postpone refcount updates'],
  ['refcount_bits=<num>', 'Width of a reference count entry in bits'],
  ['size=<size>', 'Virtual disk size'],
];

const AMEND_KEYS = new Set(QCOW2_AMEND_OPTIONS.map(([k]) => k.slice(0, k.indexOf('='))));

function amendHelp(format: string): { text: string; ok: boolean } {
  if (format !== 'qcow2') return { text: `Format driver '${format}' does not support option amendment`, ok: false };
  const lines = QCOW2_AMEND_OPTIONS.map(([k, h]) => `  ${k.padEnd(22)} - ${h}\n`);
  return { text: `Amend options for 'qcow2':\n${lines.join('')}`, ok: true };
}

/** qemu's is_valid_option_list: non-empty, no empty element (",," is an escaped comma). */
function validOptionList(text: string): boolean {
  if (text === '') return false;
  return !text.replace(/,,/g, '').split(',').some((part) => part === '');
}

/**
 * Checks the -o options against qcow2's amend options and normalises their
 * values (qemu-img's qemu_opts_do_parse); returns the error text on failure.
 */
function amendOptions(optionStrings: readonly string[]): Record<string, string> | string {
  const out: Record<string, string> = {};
  const asCreateOption = (key: string, value: string): string | undefined => parseCreateOptions('qcow2', [`${key}=${value.replace(/,/g, ',,')}`]).get(key)?.value;
  for (const text of optionStrings) {
    for (const [key, value] of splitOptionString(text)) {
      if (!AMEND_KEYS.has(key)) {
        let creatable = false;
        try {
          creatable = asCreateOption(key, value) !== undefined;
        } catch {
          creatable = false;
        }
        return `Invalid parameter '${key}'${creatable ? '\nThis option is only supported for image creation' : ''}`;
      }
      try {
        out[key] = asCreateOption(key, value) ?? value;
      } catch (e) {
        // Amend-only options (encrypt.keyslot, ...) are not creation options: keep them as given.
        if (/^Invalid parameter/.test(describeError(e))) out[key] = value;
        else return describeError(e);
      }
    }
  }
  return out;
}

/** `vdisk amend [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename`, as qemu-img amend. */
export async function amendCommand(ctx: CliContext, argv: readonly string[]): Promise<number> {
  const parsed = getopt(argv, {
    shortOptions: 'ho:f:t:pq',
    longOptions: [
      { name: 'help', hasArg: false, key: 'h' },
      { name: 'object', hasArg: true, key: 'object' },
      { name: 'image-opts', hasArg: false, key: 'image-opts' },
      { name: 'force', hasArg: false, key: 'force' },
    ],
  });
  if (!parsed.ok) return reportUsage(ctx, parsed.message);
  const optionStrings: string[] = [];
  let format: string | undefined;
  let progress = false;
  let quiet = false;
  let imageOpts = false;
  let cache: CacheMode | undefined;
  for (const { key, value = '' } of parsed.options) {
    if (key === 'o') {
      if (!validOptionList(value)) {
        reportError(ctx, `Invalid option list: ${value}`);
        return 1;
      }
      optionStrings.push(value);
    } else if (key === 'f') format = value;
    else if (key === 'image-opts') imageOpts = true;
    else if (key === 't') {
      const checked = cacheOption(value, 'cache');
      if (!checked.ok) {
        reportError(ctx, checked.message);
        return 1;
      }
      cache = checked.mode;
    }
    else if (key === 'p') progress = true;
    else if (key === 'q') quiet = true;
    else if (key === 'h') {
      ctx.out.stdout('usage: vdisk amend [-p] [-q] [-f fmt] [-t cache] [--force] -o options filename\n');
      return 0;
    }
  }
  if (optionStrings.length === 0) return reportUsage(ctx, 'Must specify options (-o)');
  const help = optionStrings.some(wantsHelp);
  if (format !== undefined && help) {
    const h = amendHelp(format);
    if (!h.ok) reportError(ctx, h.text);
    else ctx.out.stdout(h.text);
    return h.ok ? 0 : 1;
  }
  if (parsed.operands.length !== 1) {
    reportError(ctx, 'Expecting one image file name');
    return 1;
  }
  const filename = parsed.operands[0] ?? '';
  const node = await openForWriting(ctx, filename, { format, imageOpts, ...(cache ? { cache } : {}) });
  if (!node) return 1;
  let status = 0;
  const printer = new ProgressPrinter(progress && !quiet ? (t) => ctx.out.stdout(t) : undefined);
  try {
    if (help) {
      const h = amendHelp(node.format);
      if (!h.ok) reportError(ctx, h.text);
      else ctx.out.stdout(h.text);
      return h.ok ? 0 : 1;
    }
    if (!node.amend || node.format !== 'qcow2') {
      reportError(ctx, `Format driver '${node.format}' does not support option amendment`);
      return 1;
    }
    const options = amendOptions(optionStrings);
    if (typeof options === 'string') {
      reportError(ctx, options);
      return 1;
    }
    printer.set(0);
    try {
      await node.amend(options, (done, total) => printer.set(total > 0 ? (done / total) * 100 : 100));
    } catch (e) {
      status = 1;
      reportError(ctx, describeError(e));
    }
    printer.set(100);
    if (progress && !quiet) printer.end();
  } finally {
    try {
      await node.close();
    } catch (e) {
      reportError(ctx, describeError(e));
      status = 1;
    }
  }
  return status;
}
