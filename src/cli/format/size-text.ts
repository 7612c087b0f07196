/**
 * Byte counts as QEMU's tools print them. qemu-img (size_to_str) and qemu-io
 * (cvtstr) each have their own rules; scripts parse both, so both are exact.
 */

const IMG_SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'] as const;

/** C's printf("%0.3g") for the positive values sizes produce (ties round to even, as glibc does). */
export function formatG3(value: number): string {
  if (value === 0) return '0';
  // %g picks the style from the exponent the value has once rounded to 3 digits.
  const [mant = '', exp = '0'] = value.toExponential(2).split('e');
  const x = Number(exp);
  if (x >= -4 && x < 3) {
    const fixed = cFixed(value, 2 - x);
    return fixed.includes('.') ? fixed.replace(/0+$/, '').replace(/\.$/, '') : fixed;
  }
  const m = mant.includes('.') ? mant.replace(/0+$/, '').replace(/\.$/, '') : mant;
  return `${m}e${x < 0 ? '-' : '+'}${String(Math.abs(x)).padStart(2, '0')}`;
}

/**
 * qemu-img's size_to_str: "1 GiB", "328 KiB", "0.977 MiB". The unit switches
 * up once the integer part would reach 1000, so no value prints with 4 digits.
 */
export function imgSizeText(bytes: number): string {
  let exp = 0;
  const scaled = bytes / (1000 / 1024);
  if (scaled > 0) exp = Math.floor(Math.log2(scaled)) + 1; // frexp's exponent
  // C integer division truncates toward zero: (0 - 1) / 10 is 0.
  const i = Math.min(Math.trunc((exp - 1) / 10), IMG_SUFFIXES.length - 1);
  const div = 2 ** (i * 10);
  return `${formatG3(bytes / div)} ${IMG_SUFFIXES[i] ?? ''}B`;
}

const IO_UNITS: ReadonlyArray<readonly [number, string]> = [
  [2 ** 60, ' EiB'],
  [2 ** 50, ' PiB'],
  [2 ** 40, ' TiB'],
  [2 ** 30, ' GiB'],
  [2 ** 20, ' MiB'],
  [2 ** 10, ' KiB'],
];

/** qemu-io's cvtstr: "%.3f" in the largest unit, ".000" dropped: "64 KiB", "3.938 MiB", "512 bytes". */
export function ioSizeText(value: number): string {
  for (const [unit, suffix] of IO_UNITS) {
    if (value >= unit) return trimThousandths(cFixed(value / unit, 3), suffix);
  }
  return trimThousandths(cFixed(value, 6), ' bytes');
}

function trimThousandths(text: string, suffix: string): string {
  const at = text.indexOf('.000');
  return at >= 0 ? text.slice(0, at) + suffix : text + suffix;
}

/** printf("%#x") / "%#-16x" style: 0 prints as "0", others with 0x. */
export function cHexAlt(value: number): string {
  return value === 0 ? '0' : `0x${value.toString(16)}`;
}

/**
 * printf("%.Nf"): like toFixed, except that an exact tie rounds to even as
 * glibc does (1.0625 prints as "1.062"; toFixed would say "1.063").
 */
export function cFixed(value: number, digits: number): string {
  const plain = value.toFixed(digits);
  if (!Number.isFinite(value) || digits > 40) return plain;
  const exact = Math.abs(value).toFixed(Math.min(100, digits + 60));
  const dot = exact.indexOf('.');
  const tail = exact.slice(dot + 1 + digits);
  if (!/^50*$/.test(tail)) return plain;
  // A tie: keep the truncated digits when their last digit is even.
  const truncated = exact.slice(0, digits === 0 ? dot : dot + 1 + digits);
  const lastDigit = Number(truncated[truncated.length - 1]);
  if (lastDigit % 2 === 0) return (value < 0 ? '-' : '') + truncated;
  return plain;
}
