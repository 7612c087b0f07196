/**
 * QMP block-dirty-bitmap-add / -remove / -clear / -enable / -disable, with
 * QEMU's argument names (qapi/block-core.json), and the resolution of
 * block-export-add's `bitmaps` list.
 */
import type { DirtyBitmap } from '../block/dirty-bitmap.js';
import { VdiskError } from '../errors.js';
import { QmpError, optBool, optInt, str, type QmpServer } from '../qmp/index.js';
import type { Daemon } from './daemon.js';

type Args = Readonly<Record<string, unknown>>;

export function registerBitmapCommands(qmp: QmpServer, daemon: Daemon): void {
  qmp.register('block-dirty-bitmap-add', {
    params: { node: 'str', name: 'str', 'granularity?': 'int', 'persistent?': 'bool', 'disabled?': 'bool' },
    handler: (args) => {
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
      return {};
    },
  });
  const simple = (command: string, op: (node: ReturnType<Daemon['node']>, name: string) => void): void => {
    qmp.register(command, {
      params: { node: 'str', name: 'str' },
      handler: (args) => {
        op(daemon.node(str(args, 'node')), str(args, 'name'));
        return {};
      },
    });
  };
  simple('block-dirty-bitmap-remove', (node, name) => daemon.bitmaps.remove(node, name));
  simple('block-dirty-bitmap-clear', (node, name) => daemon.bitmaps.clear(node, name));
  simple('block-dirty-bitmap-enable', (node, name) => daemon.bitmaps.enable(node, name));
  simple('block-dirty-bitmap-disable', (node, name) => daemon.bitmaps.disable(node, name));
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
