/**
 * QMP block-dirty-bitmap-add / -remove / -clear / -enable / -disable / -merge,
 * with QEMU's argument names (qapi/block-core.json), and the resolution of
 * block-export-add's `bitmaps` list.
 */
import type { DirtyBitmap } from '../block/dirty-bitmap.js';
import type { ImageNode } from '../block/index.js';
import { VdiskError } from '../errors.js';
import { QmpError, checkArgs, isJsonObject, optBool, optInt, str, type ParamSpec, type QmpServer } from '../qmp/index.js';
import type { Daemon } from './daemon.js';
import type { BitmapRef } from './named-bitmaps.js';

type Args = Readonly<Record<string, unknown>>;

/**
 * One bitmap command: its parameters, a check of its arguments that needs no
 * lookup (QEMU's input visitor, which a transaction runs over every action
 * before any of them), and what it does. `path` prefixes the names in the
 * messages (a transaction's `actions[0].data.`).
 */
export interface BitmapCommand {
  readonly params: ParamSpec;
  readonly check?: (args: Args, path: string) => void;
  /** Synchronous, so that a transaction can put everything back if a later action fails. */
  readonly run: (daemon: Daemon, args: Args) => void;
}

const NODE_AND_NAME: ParamSpec = { node: 'str', name: 'str' };

/** A command that names one existing bitmap and does `op` to it. */
function onOneBitmap(op: 'remove' | 'clear' | 'enable' | 'disable'): BitmapCommand {
  return { params: NODE_AND_NAME, run: (daemon, args) => daemon.bitmaps[op](bitmapNode(daemon, str(args, 'node')), str(args, 'name')) };
}

/** The bitmap commands by QMP name; the ones a transaction may hold too. */
export const BITMAP_COMMANDS: ReadonlyMap<string, BitmapCommand> = new Map<string, BitmapCommand>([
  [
    'block-dirty-bitmap-add',
    {
      params: { node: 'str', name: 'str', 'granularity?': 'int', 'persistent?': 'bool', 'disabled?': 'bool' },
      run: (daemon, args) => {
        const node = daemon.node(str(args, 'node'));
        const granularity = optInt(args, 'granularity');
        if (granularity !== undefined && (granularity < 512 || granularity > 2 ** 31 || (granularity & (granularity - 1)) !== 0)) {
          throw new QmpError('GenericError', 'Granularity must be power of 2 and at least 512');
        }
        // The in-memory bits would never reach the image (no write-back at close yet): refuse rather than leave a stale on-disk bitmap.
        if (optBool(args, 'persistent') === true) {
          throw new VdiskError('ENOTSUP', `Persistent dirty bitmaps cannot be created over QMP yet; use 'vdisk bitmap --add' on the stopped image`, { field: 'persistent' });
        }
        daemon.bitmaps.add(node, str(args, 'name'), {
          ...(granularity !== undefined ? { granularity } : {}),
          disabled: optBool(args, 'disabled') === true,
        });
      },
    },
  ],
  ['block-dirty-bitmap-remove', onOneBitmap('remove')],
  ['block-dirty-bitmap-clear', onOneBitmap('clear')],
  ['block-dirty-bitmap-enable', onOneBitmap('enable')],
  ['block-dirty-bitmap-disable', onOneBitmap('disable')],
  [
    'block-dirty-bitmap-merge',
    {
      params: { node: 'str', target: 'str', bitmaps: 'any' },
      check: (args, path) => void mergeSources(args['bitmaps'], path),
      run: (daemon, args) => {
        const sources = mergeSources(args['bitmaps'], '');
        const node = bitmapNode(daemon, str(args, 'node'));
        daemon.bitmaps.merge(
          node,
          str(args, 'target'),
          sources.map((s): (() => BitmapRef) => (typeof s === 'string' ? () => ({ node, name: s }) : () => ({ node: bitmapNode(daemon, s.node), name: s.name }))),
        );
      },
    },
  ],
]);

export function registerBitmapCommands(qmp: QmpServer, daemon: Daemon): void {
  for (const [name, command] of BITMAP_COMMANDS) {
    qmp.register(name, {
      params: command.params,
      handler: (args) => {
        command.check?.(args, '');
        command.run(daemon, args);
        return {};
      },
    });
  }
  // QEMU's test hook, kept because scripts compare bitmaps with it.
  qmp.register('x-debug-block-dirty-bitmap-sha256', {
    params: NODE_AND_NAME,
    handler: (args) => ({ sha256: daemon.bitmaps.sha256(bitmapNode(daemon, str(args, 'node')), str(args, 'name')) }),
  });
}

/**
 * The node of an existing bitmap. QEMU words a missing one differently here
 * than block-dirty-bitmap-add does (block_dirty_bitmap_lookup: "Node 'x' not
 * found"; add: "Cannot find device='x' nor node-name='x'").
 */
function bitmapNode(daemon: Daemon, name: string): ImageNode {
  if (!daemon.hasNode(name)) throw new QmpError('GenericError', `Node '${name}' not found`);
  return daemon.node(name);
}

/**
 * block-dirty-bitmap-merge `bitmaps` (a list of BlockDirtyBitmapOrStr: a name
 * on the target's node, or {node, name}), checked whole before any lookup, in
 * QEMU 7.2's words (its 'null' for an element of the wrong type included).
 */
function mergeSources(value: unknown, path: string): Array<string | { readonly node: string; readonly name: string }> {
  if (!Array.isArray(value)) throw new QmpError('GenericError', `Invalid parameter type for '${path}bitmaps', expected: array`);
  return value.map((v: unknown, i) => {
    if (typeof v === 'string') return v;
    if (!isJsonObject(v)) throw new QmpError('GenericError', "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr");
    checkArgs(NODE_AND_NAME, v, `${path}bitmaps[${i}].`);
    return { node: str(v, 'node'), name: str(v, 'name') };
  });
}

/** block-export-add `bitmaps`: a JSON list, or keyval's `bitmaps.0=a,bitmaps.1=b` object. */
function bitmapNames(value: unknown): string[] {
  const items = Array.isArray(value) ? value : typeof value === 'object' && value !== null ? Object.keys(value).sort((a, b) => Number(a) - Number(b)).map((k) => (value as Args)[k]) : null;
  if (items === null) throw new QmpError('GenericError', "Invalid parameter type for 'bitmaps', expected: array");
  return items.map((v) => {
    // QEMU 7.2 also accepts {node, name}; only bitmaps of the exported node are supported here.
    if (typeof v === 'string') return v;
    if (typeof v === 'object' && v !== null && typeof (v as Args)['name'] === 'string') return (v as Args)['name'] as string;
    throw new QmpError('GenericError', "Invalid parameter type for 'bitmaps', expected: string");
  });
}

/**
 * The bitmaps an export of `nodeName` offers. As QEMU: an enabled (recording)
 * bitmap cannot go with a read-only export of a writable node, since the
 * reader would see bits change under it.
 */
export async function exportBitmaps(daemon: Daemon, args: Args, nodeName: string, writable: boolean): Promise<Array<{ name: string; bitmap: DirtyBitmap }>> {
  if (args['bitmaps'] === undefined) return [];
  const node = daemon.node(nodeName);
  const out: Array<{ name: string; bitmap: DirtyBitmap }> = [];
  for (const name of bitmapNames(args['bitmaps'])) {
    if (out.some((b) => b.name === name)) throw new QmpError('GenericError', `Bitmap '${name}' is listed twice`);
    const { bitmap, recording } = await daemon.bitmaps.forExport(node, name);
    if (recording && !writable && !node.readOnly) throw new QmpError('GenericError', `Enabled bitmap '${name}' incompatible with readonly export`);
    out.push({ name, bitmap });
  }
  return out;
}
