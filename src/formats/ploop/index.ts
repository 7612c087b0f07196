/**
 * The ploop / Parallels format ("parallels" in QEMU's tools): single images,
 * and delta stacks described by a DiskDescriptor.xml.
 */
import { NodeHostFile } from '../../host/node-file.js';
import type { FormatModule } from '../registry-types.js';
import { createPloop } from './create.js';
import { isDescriptor } from './descriptor.js';
import { PloopDriver } from './driver.js';
import { isPloopHeader } from './header.js';
import { openDescriptor } from './stack.js';

async function startsLikeDescriptor(path: string): Promise<boolean> {
  try {
    const host = await NodeHostFile.open(path, { readOnly: true });
    try {
      const head = new Uint8Array(512);
      await host.read(head, 0);
      return isDescriptor(head);
    } finally {
      await host.close();
    }
  } catch {
    return false; // PloopDriver.open reports the real problem
  }
}

export const ploopFormat: FormatModule = {
  name: 'ploop',
  probe: (head) => isPloopHeader(head) || isDescriptor(head),
  open: async (path, options) => ((await startsLikeDescriptor(path)) ? openDescriptor(path, options) : PloopDriver.open(path, options)),
  create: createPloop,
};

export { PloopDriver, type PloopOpenOptions } from './driver.js';
export { createPloop } from './create.js';
export { openPloopStack, openDescriptor, descriptorChain, readDescriptorText } from './stack.js';
export { snapshotStack, type SnapshotResult } from './snapshot.js';
export {
  readDescriptorModel,
  serializeDescriptor,
  writeDescriptor,
  type DescriptorModel,
  type DescriptorImage,
  type DescriptorShot,
} from './descriptor-edit.js';
export { parseDescriptor, type DeltaRef } from './descriptor.js';
