import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isVdiskError } from '../../../src/errors.js';
import { formatByName, probeFormat } from '../../../src/formats/registry.js';

function head(prefix: string | number[]): Uint8Array {
  const buf = new Uint8Array(512);
  buf.set(typeof prefix === 'string' ? [...prefix].map((c) => c.charCodeAt(0)) : prefix);
  return buf;
}

test('probe recognises qcow2 by magic, ploop by either signature, else raw', () => {
  assert.equal(probeFormat(head([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3])), 'qcow2');
  assert.equal(probeFormat(head('WithoutFreeSpace')), 'ploop');
  assert.equal(probeFormat(head('WithouFreSpacExt')), 'ploop');
  assert.equal(probeFormat(head('WithoutFreeSpac')), 'raw');
  assert.equal(probeFormat(head([0x51, 0x46, 0x49])), 'raw');
  assert.equal(probeFormat(new Uint8Array(0)), 'raw');
});

test('formats are found by name; unknown names are EINVAL', () => {
  assert.equal(formatByName('raw').name, 'raw');
  assert.throws(() => formatByName('vmdk'), (e) => isVdiskError(e, 'EINVAL') && /Unknown file format 'vmdk'/.test(e.message));
});

test('parallels is an alias of ploop', () => {
  assert.equal(formatByName('parallels').name, 'ploop');
  assert.equal(formatByName('ploop').name, 'ploop');
});
