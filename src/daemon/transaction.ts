/**
 * QMP `transaction` over the dirty bitmap actions and `abort`: every action's
 * arguments are checked first, as QEMU's input visitor does, then the actions
 * run in one go, and if one fails the bitmaps are put back as they were and
 * its error is the reply. A bitmap removed in a transaction keeps its name
 * until the transaction ends, as in QEMU (adding it again there fails).
 *
 * QEMU's other actions (snapshots, backups) are refused before anything runs.
 */
import { VdiskError } from '../errors.js';
import { QmpError, checkArgs, isJsonObject, type QmpServer } from '../qmp/index.js';
import { BITMAP_COMMANDS, type BitmapCommand } from './bitmap-commands.js';
import type { Daemon } from './daemon.js';

type Args = Readonly<Record<string, unknown>>;

/** Actions QEMU 7.2 takes in a transaction that vdisk does not. */
const UNSUPPORTED = new Set(['blockdev-backup', 'blockdev-snapshot', 'blockdev-snapshot-internal-sync', 'blockdev-snapshot-sync', 'drive-backup']);

interface Action {
  readonly type: string;
  readonly data: Args;
  /** Null for abort. */
  readonly command: BitmapCommand | null;
}

export function registerTransaction(qmp: QmpServer, daemon: Daemon): void {
  qmp.register('transaction', {
    params: { actions: 'any', 'properties?': 'any' },
    handler: (args) => {
      const actions = parseActions(args['actions']);
      const [first] = actions;
      if (completionMode(args['properties']) === 'grouped' && first !== undefined) {
        throw new QmpError('GenericError', `Action '${first.type}' does not support Transaction property completion-mode = grouped`);
      }
      daemon.bitmaps.atomically(() => {
        const removed = new Set<string>();
        const key = (data: Args): string => JSON.stringify([data['node'], data['name']]);
        for (const a of actions) {
          if (a.command === null) throw new QmpError('GenericError', 'Transaction aborted using Abort action');
          if (a.type === 'block-dirty-bitmap-add' && removed.has(key(a.data))) throw new QmpError('GenericError', `Bitmap already exists: ${String(a.data['name'])}`);
          a.command.run(daemon, a.data);
          if (a.type === 'block-dirty-bitmap-remove') removed.add(key(a.data));
        }
      });
      return {};
    },
  });
}

/** The list of actions, each checked whole, in QEMU's words. */
function parseActions(value: unknown): Action[] {
  if (!Array.isArray(value)) throw new QmpError('GenericError', "Invalid parameter type for 'actions', expected: array");
  return value.map((item: unknown, i): Action => {
    const at = `actions[${i}]`;
    if (!isJsonObject(item)) throw new QmpError('GenericError', `Invalid parameter type for '${at}', expected: object`);
    const type = item['type'];
    if (type === undefined) throw new QmpError('GenericError', `Parameter '${at}.type' is missing`);
    if (typeof type !== 'string') throw new QmpError('GenericError', `Invalid parameter type for '${at}.type', expected: string`);
    const command = BITMAP_COMMANDS.get(type);
    if (type !== 'abort' && command === undefined && !UNSUPPORTED.has(type)) throw new QmpError('GenericError', `Parameter 'type' does not accept value '${type}'`);
    const data = item['data'];
    if (data === undefined) throw new QmpError('GenericError', `Parameter '${at}.data' is missing`);
    if (!isJsonObject(data)) throw new QmpError('GenericError', `Invalid parameter type for '${at}.data', expected: object`);
    if (UNSUPPORTED.has(type)) {
      throw new VdiskError('ENOTSUP', `Transaction action '${type}' is not supported: vdisk takes abort and the block-dirty-bitmap actions`, { field: `${at}.type` });
    }
    checkArgs(command?.params ?? {}, data, `${at}.data.`);
    command?.check?.(data, `${at}.data.`);
    const extra = Object.keys(item).find((k) => k !== 'type' && k !== 'data');
    if (extra !== undefined) throw new QmpError('GenericError', `Parameter '${at}.${extra}' is unexpected`);
    return { type, data, command: command ?? null };
  });
}

/** The transaction's completion-mode property: 'individual' unless given. */
function completionMode(value: unknown): 'individual' | 'grouped' {
  if (value === undefined) return 'individual';
  if (!isJsonObject(value)) throw new QmpError('GenericError', "Invalid parameter type for 'properties', expected: object");
  const extra = Object.keys(value).find((k) => k !== 'completion-mode');
  if (extra !== undefined) throw new QmpError('GenericError', `Parameter 'properties.${extra}' is unexpected`);
  const mode = value['completion-mode'];
  if (mode === undefined || mode === 'individual' || mode === 'grouped') return mode ?? 'individual';
  throw new QmpError('GenericError', typeof mode === 'string' ? `Parameter 'completion-mode' does not accept value '${mode}'` : "Invalid parameter type for 'properties.completion-mode', expected: string");
}
