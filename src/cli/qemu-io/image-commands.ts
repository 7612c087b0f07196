/**
 * Commands about the image as a whole rather than one request: flush, length,
 * info, truncate, and the allocation queries alloc and map.
 */
import { getopt } from '../getopt.js';
import { ioFailureText } from '../errors-text.js';
import { ioSizeText } from '../format/size-text.js';
import { qemuHumanDump } from '../format/qemu-json.js';
import { orderedSpecific } from '../image-info.js';
import { PROGRAM } from '../context.js';
import { badOption, num, simple, usage } from './command-helpers.js';
import { cvtnum, cvtnumErrorText } from './numbers.js';
import type { IoCommand, IoSession } from './session.js';

export const flushCmd = simple('flush', 'flush all in-core file state to disk', async (s) => {
  await s.node.flush();
  return 'ok';
}, { altname: 'f' });

export const lengthCmd = simple('length', 'gets the length of the current file', async (s) => {
  s.out.stdout(`${ioSizeText(s.node.length)}\n`);
  return 'ok';
}, { altname: 'l' });

/** The offset where qcow2 keeps VM state: just past the guest range its L1 table covers. */
function vmStateOffset(clusterSize: number, length: number, extendedL2: boolean): number {
  const span = clusterSize * (clusterSize / (extendedL2 ? 16 : 8));
  return Math.ceil(length / span) * span;
}

export const infoCmd = simple('info', 'prints information about the current file', async (s) => {
  const info = await s.node.info();
  const cluster = info.clusterSize ?? 0;
  const extendedL2 = info.formatSpecific?.data['extended-l2'] === true;
  const vmState = info.format === 'qcow2' && cluster > 0 ? vmStateOffset(cluster, info.virtualSize, extendedL2) : 0;
  let text = `format name: ${info.format === 'ploop' ? 'parallels' : info.format}\ncluster size: ${ioSizeText(cluster)}\nvm state offset: ${ioSizeText(vmState)}\n`;
  if (info.formatSpecific) text += `Format specific information:\n${qemuHumanDump(orderedSpecific(info.formatSpecific.type, info.formatSpecific.data), 1)}`;
  s.out.stdout(text);
  return 'ok';
}, { altname: 'i' });

/** The preallocation modes QEMU knows (a driver may still refuse one). */
const PREALLOC_MODES: readonly string[] = ['off', 'metadata', 'falloc', 'full'];

export const truncateCmd: IoCommand = {
  name: 'truncate',
  altname: 't',
  argmin: 1,
  argmax: 3,
  args: '[-m prealloc_mode] off',
  oneline: 'truncates the current file at the given offset',
  writes: true,
  async run(s, argv) {
    const p = getopt(argv, { shortOptions: 'm:' });
    if (!p.ok) return badOption(s, truncateCmd, p);
    // qemu-io reads the size from the first operand (ignoring any more) and crashes when there is none.
    if (p.operands.length === 0) return usage(s, truncateCmd);
    const prealloc = p.options.findLast((o) => o.key === 'm')?.value ?? 'off';
    if (!PREALLOC_MODES.includes(prealloc)) {
      s.out.stderr(`${PROGRAM}: Invalid preallocation mode '${prealloc}'\n`);
      return 'failed';
    }
    const size = cvtnum(p.operands[0] ?? '');
    if (typeof size !== 'number') {
      // Its parse error names the command's first word, whatever the operand was.
      s.out.stdout(cvtnumErrorText(size, argv[0] ?? ''));
      return 'failed';
    }
    if (size < s.node.length && prealloc !== 'off') {
      // The refusal is the driver's: qcow2 words it its own way, the host file (raw's) another.
      const text = s.node.format === 'qcow2' ? "Preallocation can't be used for shrinking an image" : 'Cannot use preallocation for shrinking files';
      s.out.stderr(`${PROGRAM}: ${text}\n`);
      return 'failed';
    }
    try {
      await s.node.resize(size, { shrink: true, ...(prealloc !== 'off' ? { preallocation: prealloc } : {}) });
    } catch (e) {
      s.out.stderr(`vdisk: ${e instanceof Error ? e.message : String(e)}\n`);
      return 'failed';
    }
    return 'ok';
  },
};

/** bdrv_is_allocated over [offset, offset+count) of the top layer: runs of allocated / not. */
async function topLayerRuns(s: IoSession, offset: number, count: number): Promise<Array<{ length: number; allocated: boolean }>> {
  const runs: Array<{ length: number; allocated: boolean }> = [];
  if (count <= 0) return runs;
  for (const x of await s.node.layerStatus(offset, count)) {
    const last = runs[runs.length - 1];
    if (last && last.allocated === x.allocated) last.length += x.length;
    else runs.push({ length: x.length, allocated: x.allocated });
  }
  return runs;
}

export const allocCmd: IoCommand = {
  name: 'alloc',
  altname: 'a',
  argmin: 1,
  argmax: 2,
  args: 'offset [count]',
  oneline: 'checks if offset is allocated in the file',
  async run(s, argv) {
    const offset = num(s, argv[0]);
    if (offset === undefined) return 'failed';
    let count = 512;
    if (argv.length === 2) {
      const n = num(s, argv[1]);
      if (n === undefined) return 'failed';
      count = n;
    }
    const available = Math.max(0, Math.min(count, s.node.length - offset));
    let allocated = 0;
    try {
      for (const r of await topLayerRuns(s, offset, available)) if (r.allocated) allocated += r.length;
    } catch (e) {
      s.out.stdout(`is_allocated failed: ${ioFailureText(e)}\n`);
      return 'failed';
    }
    s.out.stdout(`${allocated}/${available} bytes allocated at offset ${ioSizeText(offset)}\n`);
    return 'ok';
  },
};

// map is the one command whose empty synopsis help still prints ("map  -- ...").
export const mapCmd = simple('map', 'prints the allocated areas of a file', async (s) => {
  let offset = 0;
  let text = '';
  try {
    for (const r of await topLayerRuns(s, 0, s.node.length)) {
      text += `${ioSizeText(r.length)} (0x${r.length.toString(16)}) bytes ${r.allocated ? '    allocated' : 'not allocated'} at offset ${ioSizeText(offset)} (0x${offset.toString(16)})\n`;
      offset += r.length;
    }
  } catch (e) {
    s.out.stdout(text);
    s.out.stderr(`vdisk: Failed to get allocation status: ${ioFailureText(e)}\n`);
    return 'failed';
  }
  s.out.stdout(text);
  return 'ok';
}, { args: '' });
