import { QmpError } from './protocol.js';

/** The type of one command parameter, as QAPI names them. */
export type ParamType = 'str' | 'int' | 'bool' | 'any' | 'object';

/**
 * A command's parameters: name → type; a trailing `?` on the name marks it
 * optional. Checking against it gives QEMU's wording for missing, unexpected and
 * mistyped parameters.
 */
export type ParamSpec = Readonly<Record<string, ParamType>>;

/** A JSON object (QAPI's 'object'): not null, not an array. */
export function isJsonObject(v: unknown): v is Readonly<Record<string, unknown>> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * `path` prefixes the names in the messages where the arguments are nested in
 * another command's (a transaction's `actions[0].data.`), as QEMU names them.
 */
export function checkArgs(spec: ParamSpec, args: Readonly<Record<string, unknown>>, path = ''): void {
  const known = new Map<string, { type: ParamType; optional: boolean }>();
  for (const [k, type] of Object.entries(spec)) {
    const optional = k.endsWith('?');
    known.set(optional ? k.slice(0, -1) : k, { type, optional });
  }
  for (const [key, { type, optional }] of known) {
    const v = args[key];
    if (v === undefined) {
      if (!optional) throw new QmpError('GenericError', `Parameter '${path}${key}' is missing`);
      continue;
    }
    if (!matches(type, v)) {
      const expected = type === 'str' ? 'string' : type === 'int' ? 'integer' : type === 'bool' ? 'boolean' : 'object';
      throw new QmpError('GenericError', `Invalid parameter type for '${path}${key}', expected: ${expected}`);
    }
  }
  // Last, as QEMU's input visitor checks for leftovers once it has visited every member.
  for (const key of Object.keys(args)) {
    if (!known.has(key)) throw new QmpError('GenericError', `Parameter '${path}${key}' is unexpected`);
  }
}

function matches(type: ParamType, v: unknown): boolean {
  switch (type) {
    case 'str':
      return typeof v === 'string';
    case 'int':
      return typeof v === 'number' && Number.isSafeInteger(v);
    case 'bool':
      return typeof v === 'boolean';
    case 'object':
      return isJsonObject(v);
    case 'any':
      return true;
  }
}

export function str(args: Readonly<Record<string, unknown>>, key: string): string {
  const v = args[key];
  if (typeof v !== 'string') throw new QmpError('GenericError', `Parameter '${key}' is missing`);
  return v;
}

export function optStr(args: Readonly<Record<string, unknown>>, key: string): string | undefined {
  const v = args[key];
  return typeof v === 'string' ? v : undefined;
}

export function optInt(args: Readonly<Record<string, unknown>>, key: string): number | undefined {
  const v = args[key];
  return typeof v === 'number' ? v : undefined;
}

export function optBool(args: Readonly<Record<string, unknown>>, key: string): boolean | undefined {
  const v = args[key];
  return typeof v === 'boolean' ? v : undefined;
}
