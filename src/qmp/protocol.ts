/** QMP message shapes (docs/interop/qmp-spec of QEMU) and the error classes it uses. */

export type QmpErrorClass = 'GenericError' | 'CommandNotFound' | 'DeviceNotFound' | 'DeviceNotActive' | 'KVMMissingCap';

/** An error a command reports to the client as `{"error": {"class", "desc"}}`. */
export class QmpError extends Error {
  override readonly name = 'QmpError';
  readonly errorClass: QmpErrorClass;
  constructor(errorClass: QmpErrorClass, desc: string) {
    super(desc);
    this.errorClass = errorClass;
  }
}

export interface QmpVersion {
  readonly qemu: { readonly major: number; readonly minor: number; readonly micro: number };
  readonly package: string;
}

export interface QmpTimestamp {
  readonly seconds: number;
  readonly microseconds: number;
}

export function timestampNow(): QmpTimestamp {
  const ms = Date.now();
  return { seconds: Math.floor(ms / 1000), microseconds: (ms % 1000) * 1000 };
}

/** A parsed command: `{"execute"|"exec-oob": name, "arguments"?: {...}, "id"?: <a JSON value>}`. */
export interface QmpCommand {
  readonly name: string;
  readonly args: Readonly<Record<string, unknown>>;
  readonly id?: unknown;
  readonly hasId: boolean;
}

/** Validates a message from the client; a QmpError explains what is wrong with it. */
export function parseCommand(message: unknown): QmpCommand {
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new QmpError('GenericError', 'QMP input must be a JSON object');
  }
  const obj = message as Record<string, unknown>;
  const hasId = Object.hasOwn(obj, 'id');
  for (const key of Object.keys(obj)) {
    if (key !== 'execute' && key !== 'exec-oob' && key !== 'arguments' && key !== 'id' && key !== 'control') {
      throw new QmpError('GenericError', `QMP input member '${key}' is unexpected`);
    }
  }
  const name = obj['execute'] ?? obj['exec-oob'];
  if (name === undefined) throw new QmpError('GenericError', "QMP input lacks member 'execute'");
  if (typeof name !== 'string') throw new QmpError('GenericError', "QMP input member 'execute' must be a string");
  const args = obj['arguments'] ?? {};
  if (typeof args !== 'object' || args === null || Array.isArray(args)) {
    throw new QmpError('GenericError', "QMP input member 'arguments' must be an object");
  }
  return { name, args: args as Record<string, unknown>, id: obj['id'], hasId };
}
