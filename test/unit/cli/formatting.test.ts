import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cFixed, formatG3, imgSizeText, ioSizeText } from '../../../src/cli/format/size-text.js';
import { qemuHumanDump, qemuJsonPretty } from '../../../src/cli/format/qemu-json.js';
import { ProgressPrinter } from '../../../src/cli/format/progress.js';
import { hexDump, reportText, timeText } from '../../../src/cli/qemu-io/report.js';

test('imgSizeText prints sizes as qemu-img size_to_str does', () => {
  assert.equal(imgSizeText(0), '0 B');
  assert.equal(imgSizeText(500), '500 B');
  assert.equal(imgSizeText(1000), '0.977 KiB');
  assert.equal(imgSizeText(335872), '328 KiB');
  assert.equal(imgSizeText(2 ** 30), '1 GiB');
  assert.equal(imgSizeText(5767168), '5.5 MiB');
  assert.equal(imgSizeText(1048064), '1 MiB');
  assert.equal(imgSizeText(1152), '1.12 KiB');
});

test('ioSizeText prints sizes as qemu-io cvtstr does, rounding ties to even', () => {
  assert.equal(ioSizeText(0), '0 bytes');
  assert.equal(ioSizeText(512), '512 bytes');
  assert.equal(ioSizeText(65536), '64 KiB');
  assert.equal(ioSizeText(0x3f0000), '3.938 MiB');
  assert.equal(ioSizeText(0x110000), '1.062 MiB');
  assert.equal(ioSizeText(4 * 2 ** 20), '4 MiB');
});

test('cFixed and formatG3 follow glibc printf', () => {
  assert.equal(cFixed(1.0625, 3), '1.062');
  assert.equal(cFixed(2.5, 0), '2');
  assert.equal(cFixed(0.125, 2), '0.12');
  assert.equal(cFixed(12.5, 2), '12.50');
  assert.equal(formatG3(0.99951), '1');
  assert.equal(formatG3(1.125), '1.12');
  assert.equal(formatG3(999.7), '1e+03');
});

test('qemuJsonPretty indents by 4 and keeps key order', () => {
  assert.equal(qemuJsonPretty({ a: 1, b: { c: 'x', d: [true, null] } }), '{\n    "a": 1,\n    "b": {\n        "c": "x",\n        "d": [\n            true,\n            null\n        ]\n    }\n}');
  assert.equal(qemuJsonPretty('é"'), '"\\u00e9\\""');
});

test('qemuHumanDump turns dashes into spaces and indents nested values', () => {
  assert.equal(qemuHumanDump({ 'lazy-refcounts': false, list: [1, { x: 'y' }] }, 1), '    lazy refcounts: false\n    list:\n        [0]: 1\n        [1]:\n            x: y\n');
});

test('ProgressPrinter prints at 0, on 1% steps and at 100, and ends with a bare newline', () => {
  let out = '';
  const p = new ProgressPrinter((t) => void (out += t));
  p.set(0);
  p.set(0.5);
  p.set(50);
  p.set(100);
  p.end();
  assert.equal(out, '    (0.00/100%)\r    (50.00/100%)\r    (100.00/100%)\r\n');
});

test('hexDump and reportText have the layout of qemu-io', () => {
  assert.equal(hexDump(new Uint8Array([0x41, 0, 0x7a, 0x20, 0xff]), 0x3e8), '000003e8:  41 00 7a 20 ff  A.z..\n');
  assert.equal(reportText({ op: 'wrote', seconds: 0.5, offset: 0, count: 65536, total: 65536, ops: 1, machine: false }), 'wrote 65536/65536 bytes at offset 0\n64 KiB, 1 ops; 00.50 sec (128 KiB/sec and 2.0000 ops/sec)\n');
  assert.equal(timeText(75.25, false), '0:01:15.25');
});
