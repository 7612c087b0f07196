import { VdiskError } from '../errors.js';

/**
 * The `-o` creation options of each format, as qemu-img 7.2 knows them: their
 * names, types, help texts and defaults, in the order qemu-img prints them in
 * its "Formatting ..." line (which is fixed, whatever order the user gave).
 */

export type OptionType = 'str' | 'bool' | 'num' | 'size';

export interface OptionDesc {
  readonly name: string;
  readonly type: OptionType;
  readonly help: string;
  /** Printed in the Formatting line when the user did not give the option. */
  readonly defaultValue?: string;
}

const SIZE: OptionDesc = { name: 'size', type: 'size', help: 'Virtual disk size' };

const QCOW2_OPTIONS: readonly OptionDesc[] = [
  { name: 'encryption', type: 'bool', help: "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)" },
  { name: 'encrypt.format', type: 'str', help: "Encrypt the image, format choices: 'aes', 'luks'" },
  { name: 'encrypt.key-secret', type: 'str', help: 'ID of secret providing qcow AES key or LUKS passphrase' },
  { name: 'encrypt.cipher-alg', type: 'str', help: 'Name of encryption cipher algorithm' },
  { name: 'encrypt.cipher-mode', type: 'str', help: 'Name of encryption cipher mode' },
  { name: 'encrypt.ivgen-alg', type: 'str', help: 'Name of IV generator algorithm' },
  { name: 'encrypt.ivgen-hash-alg', type: 'str', help: 'Name of IV generator hash algorithm' },
  { name: 'encrypt.hash-alg', type: 'str', help: 'Name of encryption hash algorithm' },
  { name: 'encrypt.iter-time', type: 'num', help: 'Time to spend in PBKDF in milliseconds' },
  { name: 'cluster_size', type: 'size', help: 'qcow2 cluster size', defaultValue: '65536' },
  { name: 'extended_l2', type: 'bool', help: 'Extended L2 tables', defaultValue: 'off' },
  { name: 'preallocation', type: 'str', help: 'Preallocation mode (allowed values: off, metadata, falloc, full)' },
  { name: 'compression_type', type: 'str', help: 'Compression method used for image cluster compression', defaultValue: 'zlib' },
  SIZE,
  { name: 'compat', type: 'str', help: 'Compatibility level (v2 [0.10] or v3 [1.1])' },
  { name: 'backing_file', type: 'str', help: 'File name of a base image' },
  { name: 'backing_fmt', type: 'str', help: 'Image format of the base image' },
  { name: 'data_file', type: 'str', help: 'File name of an external data file' },
  { name: 'data_file_raw', type: 'bool', help: 'The external data file must stay valid as a raw image' },
  { name: 'lazy_refcounts', type: 'bool', help: 'Postpone refcount updates', defaultValue: 'off' },
  { name: 'refcount_bits', type: 'num', help: 'Width of a reference count entry in bits', defaultValue: '16' },
];

/** The host file's own options (QEMU's "file" protocol), appended after the format's. */
const FILE_PROTOCOL_OPTIONS: readonly OptionDesc[] = [
  { name: 'nocow', type: 'bool', help: 'Turn off copy-on-write (valid only on btrfs)' },
  { name: 'preallocation', type: 'str', help: 'Preallocation mode (allowed values: off, falloc, full)' },
  { name: 'extent_size_hint', type: 'size', help: 'Extent size hint for the image file, 0 to disable' },
];

const PARALLELS_OPTIONS: readonly OptionDesc[] = [
  SIZE,
  { name: 'cluster_size', type: 'size', help: 'Parallels image cluster size', defaultValue: '1048576' },
];

const FORMAT_OPTIONS: Readonly<Record<string, readonly OptionDesc[]>> = {
  raw: [SIZE],
  qcow2: QCOW2_OPTIONS,
  // QEMU's parallels create options, in its order (size first); `ploop` is vdisk's name for the same format.
  parallels: PARALLELS_OPTIONS,
  ploop: PARALLELS_OPTIONS,
};

/** The format's options, or undefined for a format vdisk cannot create. */
export function formatOptions(format: string): readonly OptionDesc[] | undefined {
  return FORMAT_OPTIONS[format];
}

/** Format options followed by the protocol's, a name appearing once (the format's wins). */
export function mergedOptions(format: string): readonly OptionDesc[] {
  const own = FORMAT_OPTIONS[format] ?? [];
  const names = new Set(own.map((o) => o.name));
  return [...own, ...FILE_PROTOCOL_OPTIONS.filter((o) => !names.has(o.name))];
}

/** Splits one `-o` string at single commas; `,,` is a literal comma; empty items are dropped. */
export function splitOptionItems(text: string): string[] {
  const items: string[] = [];
  let part = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] ?? '';
    if (ch !== ',') part += ch;
    else if (text[i + 1] === ',') {
      part += ',';
      i++;
    } else {
      if (part !== '') items.push(part);
      part = '';
    }
  }
  if (part !== '') items.push(part);
  return items;
}

/** Splits one `-o` string into key/value pairs; `,,` is a literal comma; a bare key means `key=on`. */
export function splitOptionString(text: string): Array<[string, string]> {
  return splitOptionItems(text).map((part) => {
    const eq = part.indexOf('=');
    return eq < 0 ? [part, 'on'] : [part.slice(0, eq), part.slice(eq + 1)];
  });
}

/** True when an option string asks for the option list (`-o help`, `-o ?`). */
export function wantsHelp(text: string): boolean {
  return splitOptionString(text).some(([k, v]) => (k === 'help' || k === '?') && v === 'on');
}

const SIZE_SUFFIX: Readonly<Record<string, number>> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/**
 * qemu_strtosz: decimal (a fraction allowed with a unit), or 0x hex, with an
 * optional b/k/M/G/T/P/E suffix. Returns undefined when the text is not a size.
 */
export function parseQemuSize(text: string): number | undefined {
  let value: number;
  let rest: string;
  const hexMatch = /^0x([0-9a-f]+)(.*)$/i.exec(text);
  if (hexMatch) {
    value = Number.parseInt(hexMatch[1] ?? '', 16);
    rest = hexMatch[2] ?? '';
  } else {
    const m = /^([0-9]+(?:\.[0-9]*)?)(.*)$/.exec(text);
    if (!m) return undefined;
    value = Number(m[1]);
    rest = m[2] ?? '';
  }
  const mult = SIZE_SUFFIX[rest.toLowerCase()];
  if (mult === undefined || rest.length > 1) return undefined;
  const bytes = value * mult;
  if (rest === '' && !Number.isInteger(value)) return undefined;
  if (!Number.isFinite(bytes)) return undefined;
  return Math.floor(bytes);
}

function parseBool(text: string): boolean | undefined {
  if (['on', 'yes', 'true', 'y'].includes(text)) return true;
  if (['off', 'no', 'false', 'n'].includes(text)) return false;
  return undefined;
}

/** One option as the user gave it, checked against its type. */
export interface GivenOption {
  readonly desc: OptionDesc;
  /** As typed (printed for strings and bools). */
  readonly text: string;
  /** Normalised for the engine: bytes/decimal for sizes and numbers, on/off for bools. */
  readonly value: string;
}

/**
 * Parses the `-o` strings against the format's option list (last one wins,
 * as in QEMU). Errors are qemu-img's texts, thrown as VdiskError EINVAL.
 */
export function parseCreateOptions(format: string, optionStrings: readonly string[]): Map<string, GivenOption> {
  const descs = mergedOptions(format);
  const given = new Map<string, GivenOption>();
  for (const text of optionStrings) {
    for (const [key, raw] of splitOptionString(text)) {
      const desc = descs.find((d) => d.name === key);
      if (!desc) throw new VdiskError('EINVAL', `Invalid parameter '${key}'`, { field: key });
      given.set(key, { desc, text: raw, value: normaliseValue(desc, raw) });
    }
  }
  return given;
}

function normaliseValue(desc: OptionDesc, raw: string): string {
  switch (desc.type) {
    case 'size': {
      const n = parseQemuSize(raw);
      if (n === undefined || n > Number.MAX_SAFE_INTEGER) {
        throw new VdiskError(
          'EINVAL',
          `Parameter '${desc.name}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`,
          { field: desc.name },
        );
      }
      return String(n);
    }
    case 'num': {
      const n = /^(0x[0-9a-f]+|[0-9]+)$/i.test(raw) ? Number(raw) : Number.NaN;
      if (!Number.isSafeInteger(n)) throw new VdiskError('EINVAL', `Parameter '${desc.name}' expects a number`, { field: desc.name });
      return String(n);
    }
    case 'bool': {
      const b = parseBool(raw);
      if (b === undefined) throw new VdiskError('EINVAL', `Parameter '${desc.name}' expects 'on' or 'off'`, { field: desc.name });
      return b ? 'on' : 'off';
    }
    case 'str':
      return raw;
  }
}

/** qemu_opts_print: the options after "fmt=..." in qemu-img create's "Formatting" line. */
export function formattingOptions(format: string, given: ReadonlyMap<string, GivenOption>): string {
  const parts: string[] = [];
  for (const desc of mergedOptions(format)) {
    const opt = given.get(desc.name);
    if (!opt && desc.defaultValue === undefined) continue;
    let text: string;
    if (!opt) text = desc.defaultValue ?? '';
    else if (desc.type === 'size' || desc.type === 'num') text = opt.value;
    else text = opt.text;
    parts.push(`${desc.name}=${desc.type === 'str' ? text.replace(/,/g, ',,') : text}`);
  }
  return parts.join(' ');
}

const TYPE_TEXT: Readonly<Record<OptionType, string>> = { str: '<str>', bool: '<bool (on/off)>', num: '<num>', size: '<size>' };

/** `-o help`: the sorted option list, with or without the protocol's options. */
export function optionHelp(format: string, withProtocol: boolean): string {
  const descs = withProtocol ? mergedOptions(format) : (FORMAT_OPTIONS[format] ?? []);
  const lines = [...descs]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((d) => `  ${`${d.name}=${TYPE_TEXT[d.type]}`.padEnd(22)} - ${d.help}\n`);
  if (withProtocol) return `Supported options:\n${lines.join('')}`;
  return `Supported ${format} options:\n${lines.join('')}\nThe protocol level may support further options.\nSpecify the target filename to include those options.\n`;
}
