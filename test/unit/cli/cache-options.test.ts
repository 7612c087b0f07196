/**
 * -t / -T of rebase, amend and check reach the opener of the image they are
 * about (rebase: -t the overlay, -T the new backing file; amend: -t; check: -T),
 * and a mode qemu-img does not know is refused with its message.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { createImage } from '../../../src/block/index.js';
import type { Engine } from '../../../src/cli/context.js';
import { run } from '../../../src/cli/program.js';
import { type EngineOpenOptions, openTuned } from '../../../src/cli/qcow2-tuning.js';
import { withDir } from '../../support/temp-dir.js';

/** The real engine, recording the file name and cache mode of each open. */
function recordingEngine(): { engine: Engine; opens: Array<[string, string | undefined]> } {
  const opens: Array<[string, string | undefined]> = [];
  const engine: Engine = {
    openImage: (file: string, options: EngineOpenOptions) => {
      opens.push([path.basename(file), options.cache]);
      return openTuned(file, options);
    },
    createImage,
  };
  return { engine, opens };
}

async function runIn(dir: string, engine: Engine, argv: readonly string[]): Promise<{ status: number; stderr: string }> {
  let stderr = '';
  const out = { stdout: () => undefined, stderr: (t: string) => void (stderr += t) };
  const saved = process.cwd();
  process.chdir(dir);
  try {
    return { status: await run(argv, { engine, out }), stderr };
  } finally {
    process.chdir(saved);
  }
}

test(
  'rebase opens the overlay with -t and the new backing file with -T',
  withDir(async (dir) => {
    await createImage(path.join(dir, 'base.qcow2'), 'qcow2', { size: 1 << 20, options: {} });
    await createImage(path.join(dir, 'top.qcow2'), 'qcow2', { size: 1 << 20, options: {}, backingFile: 'base.qcow2', backingFormat: 'qcow2' });
    await createImage(path.join(dir, 'new.qcow2'), 'qcow2', { size: 1 << 20, options: {} });
    const { engine, opens } = recordingEngine();
    const r = await runIn(dir, engine, ['rebase', '-t', 'unsafe', '-T', 'writethrough', '-b', 'new.qcow2', '-F', 'qcow2', 'top.qcow2']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(opens, [
      ['top.qcow2', 'unsafe'],
      ['new.qcow2', 'writethrough'],
    ]);
  }),
);

test(
  'amend opens the image with -t, check with -T',
  withDir(async (dir) => {
    await createImage(path.join(dir, 'a.qcow2'), 'qcow2', { size: 1 << 20, options: {} });
    const { engine, opens } = recordingEngine();
    const amended = await runIn(dir, engine, ['amend', '-t', 'writethrough', '-o', 'lazy_refcounts=on', 'a.qcow2']);
    assert.equal(amended.status, 0, amended.stderr);
    const checked = await runIn(dir, engine, ['check', '-T', 'unsafe', 'a.qcow2']);
    assert.equal(checked.status, 0, checked.stderr);
    assert.deepEqual(opens, [
      ['a.qcow2', 'writethrough'],
      ['a.qcow2', 'unsafe'],
    ]);
  }),
);

test('an unknown cache mode is refused as qemu-img refuses it, before any open', async () => {
  const { engine, opens } = recordingEngine();
  const cases: Array<[string[], string]> = [
    [['rebase', '-t', 'bogus', '-u', '-b', '', 'a.qcow2'], 'vdisk: Invalid cache option: bogus\n'],
    [['rebase', '-T', 'bogus', '-u', '-b', '', 'a.qcow2'], 'vdisk: Invalid source cache option: bogus\n'],
    [['amend', '-t', 'bogus', '-o', 'lazy_refcounts=on', 'a.qcow2'], 'vdisk: Invalid cache option: bogus\n'],
    [['check', '-T', 'bogus', 'a.qcow2'], 'vdisk: Invalid source cache option: bogus\n'],
  ];
  for (const [argv, message] of cases) {
    let stderr = '';
    const status = await run(argv, { engine, out: { stdout: () => undefined, stderr: (t) => void (stderr += t) } });
    assert.deepEqual([status, stderr], [1, message], argv.join(' '));
  }
  assert.deepEqual(opens, []);
});
