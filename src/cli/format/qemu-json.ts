import type { JsonValue } from '../../formats/driver.js';

/**
 * JSON as QEMU's qobject_to_json_pretty writes it: 4-space indentation,
 * `"key": value`, keys in insertion order, no trailing newline (callers add it).
 */
export function qemuJsonPretty(value: JsonValue, level = 0): string {
  const pad = ' '.repeat(4 * (level + 1));
  const closePad = ' '.repeat(4 * level);
  if (Array.isArray(value)) {
    if (value.length === 0) return `[\n${closePad}]`;
    return `[\n${value.map((v) => pad + qemuJsonPretty(v, level + 1)).join(',\n')}\n${closePad}]`;
  }
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value);
    if (entries.length === 0) return `{\n${closePad}}`;
    return `{\n${entries.map(([k, v]) => `${pad}${jsonString(k)}: ${qemuJsonPretty(v, level + 1)}`).join(',\n')}\n${closePad}}`;
  }
  if (typeof value === 'string') return jsonString(value);
  return String(value);
}

/** QEMU escapes control characters, DEL and everything outside ASCII as \uXXXX. */
function jsonString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c < 0x20 || c >= 0x7f) {
      if (c > 0xffff) {
        const hi = 0xd800 + ((c - 0x10000) >> 10);
        const lo = 0xdc00 + ((c - 0x10000) & 0x3ff);
        out += `\\u${hi.toString(16).padStart(4, '0')}\\u${lo.toString(16).padStart(4, '0')}`;
      } else out += `\\u${c.toString(16).padStart(4, '0')}`;
    } else out += ch;
  }
  return `${out}"`;
}

/**
 * The human dump of a QAPI object (qemu-img info's "Format specific
 * information"): dashes in keys become spaces, nested objects and lists indent
 * by 4 per level.
 */
export function qemuHumanDump(data: { readonly [key: string]: JsonValue }, indentation: number): string {
  let out = '';
  for (const [key, value] of Object.entries(data)) {
    const composite = value !== null && typeof value === 'object';
    out += `${' '.repeat(indentation * 4)}${key.replace(/-/g, ' ')}:${composite ? '\n' : ' '}`;
    out += dumpValue(value, indentation + 1);
  }
  return out;
}

function dumpValue(value: JsonValue, indentation: number): string {
  if (Array.isArray(value)) {
    let out = '';
    value.forEach((v, i) => {
      const composite = v !== null && typeof v === 'object';
      out += `${' '.repeat(indentation * 4)}[${i}]:${composite ? '\n' : ' '}`;
      out += dumpValue(v, indentation + 1);
    });
    return out;
  }
  if (value !== null && typeof value === 'object') return qemuHumanDump(value, indentation);
  return `${String(value)}\n`;
}
