import { cFixed, ioSizeText } from '../format/size-text.js';

/** qemu-io's timestr for the report line; 7.2 prints "00.00 sec" under a minute. */
export function timeText(seconds: number, fixed: boolean): string {
  const whole = Math.floor(seconds);
  const hundredths = Math.floor((seconds - whole) * 100);
  if (fixed || whole >= 60) {
    const h = Math.floor(whole / 3600);
    const m = Math.floor(whole / 60) % 60;
    const s = whole % 60;
    return `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}.${String(hundredths).padStart(2, '0')}`;
  }
  return `${cFixed(seconds, 2).padStart(5, '0')} sec`;
}

/** print_report: "wrote 65536/65536 bytes at offset 0" and the statistics line (or -C's CSV). */
export function reportText(opts: {
  readonly op: string;
  readonly seconds: number;
  readonly offset: number;
  readonly count: number;
  readonly total: number;
  readonly ops: number;
  readonly machine: boolean;
}): string {
  // Sub-microsecond operations would divide by zero; QEMU's clock never reads 0 either.
  const t = Math.max(opts.seconds, 1e-9);
  const ts = timeText(opts.seconds, opts.machine);
  if (opts.machine) return `${opts.total},${opts.ops},${ts},${cFixed(opts.total / t, 3)},${cFixed(opts.ops / t, 3)}\n`;
  return (
    `${opts.op} ${opts.total}/${opts.count} bytes at offset ${opts.offset}\n` +
    `${ioSizeText(opts.total)}, ${opts.ops} ops; ${ts} (${ioSizeText(opts.total / t)}/sec and ${cFixed(opts.ops / t, 4)} ops/sec)\n`
  );
}

function isAlnum(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** dump_buffer: 16 bytes a line, "%08x:  " offset, hex bytes, then letters and digits (others as '.'). */
export function hexDump(buf: Uint8Array, offset: number): string {
  const lines: string[] = [];
  for (let i = 0; i < buf.length; i += 16) {
    const row = buf.subarray(i, Math.min(i + 16, buf.length));
    let hex = '';
    let text = '';
    for (const b of row) {
      hex += `${b.toString(16).padStart(2, '0')} `;
      text += isAlnum(b) ? String.fromCharCode(b) : '.';
    }
    lines.push(`${(offset + i).toString(16).padStart(8, '0')}:  ${hex} ${text}\n`);
  }
  return lines.join('');
}
