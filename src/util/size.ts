import { VdiskError } from '../errors.js';

const SUFFIXES: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
  e: 1024 ** 6,
};

/**
 * Parses a size as qemu-img does: a number with an optional K/M/G/T/P/E suffix
 * (powers of 1024), fractions allowed with a suffix ("1.5G").
 */
export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([bkmgtpe]?)\s*$/i.exec(text);
  if (!m) throw new VdiskError('EINVAL', `Invalid ${what} '${text}': expected a number with an optional k, M, G, T, P or E suffix`, { field: what });
  const mult = SUFFIXES[(m[2] ?? '').toLowerCase()] ?? 1;
  const value = Number(m[1]) * mult;
  if (!Number.isFinite(value) || !Number.isInteger(value) || value > Number.MAX_SAFE_INTEGER) {
    throw new VdiskError('EINVAL', `Invalid ${what} '${text}': not a whole number of bytes in range`, { field: what });
  }
  return value;
}

export function alignDown(value: number, align: number): number {
  return value - (value % align);
}

export function alignUp(value: number, align: number): number {
  const r = value % align;
  return r === 0 ? value : value + (align - r);
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0 ? true : n > 2 ** 30 && Number.isInteger(Math.log2(n));
}

/** Formats a byte count the way qemu-img prints sizes: "1 GiB", "192 KiB", "64.5 MiB". */
export function formatHumanSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${bytes} B`;
  // qemu prints with up to 3 significant digits, trimming trailing zeros (%0.3g).
  return `${formatG3(v)} ${units[i] ?? 'B'}`;
}

function formatG3(v: number): string {
  let s = v.toPrecision(3);
  if (s.includes('e')) s = String(Number(s));
  if (s.includes('.')) s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s;
}
