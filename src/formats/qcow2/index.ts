/**
 * The qcow2 format module: probe by magic, open with the engine, create as
 * qemu-img create does.
 */
import { NodeHostFile } from '../../host/index.js';
import type { FormatModule } from '../registry-types.js';
import { parseHeaderCluster, readHeaderCluster } from './header.js';
import { Qcow2Driver, type Qcow2Checker } from './qcow2-driver.js';

export { Qcow2Driver } from './qcow2-driver.js';
export type { Qcow2Checker, Qcow2OpenOptions } from './qcow2-driver.js';

const MAGIC = [0x51, 0x46, 0x49, 0xfb] as const;

/** Checks (and with `repair`, fixes) an image through its own handle on the file. */
const checkFile: Qcow2Checker = async (file, { repair }) => {
  const host = await NodeHostFile.open(file, { readOnly: repair === 'none' });
  try {
    const parsed = parseHeaderCluster(await readHeaderCluster(host), { file, fileSize: await host.size() });
    // check.js and create.js load on first use: opening an image needs neither.
    const { checkQcow2 } = await import('./check.js');
    const result = await checkQcow2({ host, file, parsed, repair });
    if (repair !== 'none') await host.sync();
    return result;
  } finally {
    await host.close();
  }
};

export const qcow2Format: FormatModule = {
  name: 'qcow2',
  probe(head: Uint8Array): boolean {
    return head.length >= 4 && MAGIC.every((b, i) => head[i] === b);
  },
  open(path, options) {
    return Qcow2Driver.open(path, { ...options, checker: checkFile });
  },
  async create(path, options) {
    return (await import('./create.js')).createQcow2(path, options);
  },
};
