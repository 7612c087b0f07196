import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterCodec } from '../../../../src/formats/qcow2/compression.js';
import { measureZstdFrame } from '../../../../src/formats/qcow2/zstd-frame.js';
import { isVdiskError } from '../../../../src/errors.js';

function sample(size: number): Uint8Array {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7919) % 251 < 40 ? i & 0xff : 0x20;
  return b;
}

for (const type of ['deflate', 'zstd'] as const) {
  test(`${type}: a cluster round-trips with trailing slot bytes after the stream`, async () => {
    const codec = await ClusterCodec.create(type, 65536);
    const data = sample(65536);
    const packed = codec.compress(data);
    assert.ok(packed !== null && packed.length < 65536);
    const slot = new Uint8Array(packed.length + 700).fill(0xee);
    slot.set(packed);
    assert.ok(Buffer.from(codec.decompress(slot, { file: 'x', offset: 0 })).equals(Buffer.from(data)));
  });

  test(`${type}: garbage does not decompress and is ECORRUPT`, async () => {
    const codec = await ClusterCodec.create(type, 4096);
    assert.throws(() => codec.decompress(new Uint8Array(512).fill(0xff), { file: 'x', offset: 0x200 }), (e: unknown) => isVdiskError(e, 'ECORRUPT'));
  });
}

test('incompressible clusters are refused by compress (written uncompressed instead)', async () => {
  const codec = await ClusterCodec.create('deflate', 4096);
  const noise = new Uint8Array(4096);
  let x = 12345;
  for (let i = 0; i < noise.length; i++) noise[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  assert.equal(codec.compress(noise), null);
});

test('measureZstdFrame finds the frame end and refuses truncation', async () => {
  const codec = await ClusterCodec.create('zstd', 65536);
  const packed = codec.compress(sample(65536));
  assert.ok(packed);
  const withTail = new Uint8Array(packed.length + 10);
  withTail.set(packed);
  assert.equal(measureZstdFrame(withTail).length, packed.length);
  assert.throws(() => measureZstdFrame(packed.subarray(0, packed.length - 3)), (e: unknown) => isVdiskError(e, 'ECORRUPT'));
});
