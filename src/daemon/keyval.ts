/**
 * QEMU's command-line option syntax (util/keyval.c): `key=value,key2=value2`,
 * `,,` for a literal comma, dotted keys building nested objects
 * (`addr.type=unix`), an optional leading implied value (`tls-creds-psk,id=x`),
 * or a JSON object when the text starts with `{`.
 */
import { VdiskError } from '../errors.js';

export type KeyvalObject = { [key: string]: string | KeyvalObject };

/** Longest option text accepted. */
const MAX_TEXT = 64 * 1024;

/**
 * @example
 * parseKeyval('driver=file,filename=a,,b.img,node-name=f')
 * // { driver: 'file', filename: 'a,b.img', 'node-name': 'f' }
 * parseKeyval('tls-creds-psk,id=t', 'qom-type') // { 'qom-type': 'tls-creds-psk', id: 't' }
 */
export function parseKeyval(text: string, impliedKey?: string): Record<string, unknown> {
  if (text.length > MAX_TEXT) throw new VdiskError('EINVAL', `option text of ${text.length} characters is too long`);
  if (text.trimStart().startsWith('{')) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new VdiskError('EINVAL', `Invalid JSON option '${text}': ${e instanceof Error ? e.message : String(e)}`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new VdiskError('EINVAL', `JSON option must be an object: '${text}'`);
    return value as Record<string, unknown>;
  }
  const out: KeyvalObject = {};
  const items = splitItems(text);
  items.forEach((item, i) => {
    const eq = item.indexOf('=');
    if (eq < 0) {
      if (i !== 0 || impliedKey === undefined) throw new VdiskError('EINVAL', `Expected '=' after parameter '${item}'`, { field: item });
      set(out, impliedKey, item);
      return;
    }
    set(out, item.slice(0, eq), item.slice(eq + 1));
  });
  return out;
}

function splitItems(text: string): string[] {
  const items: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ',') {
      if (text[i + 1] === ',') {
        cur += ',';
        i++;
        continue;
      }
      items.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  items.push(cur);
  return items.filter((s) => s !== '');
}

function set(obj: KeyvalObject, dotted: string, value: string): void {
  const parts = dotted.split('.');
  if (parts.some((p) => p === '')) throw new VdiskError('EINVAL', `Invalid parameter name '${dotted}'`, { field: dotted });
  let o = obj;
  for (const p of parts.slice(0, -1)) {
    const next = o[p];
    if (typeof next === 'string') throw new VdiskError('EINVAL', `Parameter '${dotted}' conflicts with '${p}'`, { field: dotted });
    if (next === undefined) o[p] = {};
    o = o[p] as KeyvalObject;
  }
  const last = parts[parts.length - 1] ?? '';
  if (o[last] !== undefined) throw new VdiskError('EINVAL', `Parameter '${dotted}' given twice`, { field: dotted });
  o[last] = value;
}

const TRUE = new Set(['on', 'yes', 'true', 'y']);
const FALSE = new Set(['off', 'no', 'false', 'n']);

/**
 * Keyval values are all strings; QMP handlers expect QAPI types. Converts the
 * listed keys (anywhere in the tree) from on/off to booleans and from digits
 * to integers.
 */
export function typed(obj: Record<string, unknown>, types: { readonly bools?: readonly string[]; readonly ints?: readonly string[] }, path = ''): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    // Errors name the whole dotted key, as QEMU's do (cache.direct, not direct).
    const key = path + k;
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) out[k] = typed(v as Record<string, unknown>, types, `${key}.`);
    else if (typeof v === 'string' && types.bools?.includes(k)) {
      if (TRUE.has(v)) out[k] = true;
      else if (FALSE.has(v)) out[k] = false;
      else throw new VdiskError('EINVAL', `Parameter '${key}' expects 'on' or 'off'`, { field: key });
    } else if (typeof v === 'string' && types.ints?.includes(k)) {
      if (!/^\d+$/.test(v)) throw new VdiskError('EINVAL', `Parameter '${key}' expects a number`, { field: key });
      out[k] = Number(v);
    } else out[k] = v;
  }
  return out;
}
