// Builds the N-API addon in native/ with the node-gyp that ships inside npm, so
// a machine with only node, npm, python3 and g++ can build it. Node's headers are
// taken from the local node installation (include/node next to bin/node) when
// present, so no download is needed. Failure is not fatal: vdisk falls back to
// portable code paths when the addon is missing (src/host/native.ts).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';

function findNodeGyp() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  // npm's own tree: <prefix>/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js
  const prefix = dirname(dirname(process.execPath));
  for (const lib of ['lib/node_modules', 'node_modules']) {
    const p = join(prefix, lib, 'npm/node_modules/node-gyp/bin/node-gyp.js');
    if (existsSync(p)) return p;
  }
  return null;
}

function localNodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = dirname(dirname(process.execPath));
  return existsSync(join(prefix, 'include/node/node_api.h')) ? prefix : null;
}

const gyp = findNodeGyp();
if (!gyp) {
  console.error('vdisk: node-gyp not found; native addon not built, using portable fallbacks');
  process.exit(0);
}
const args = [gyp, 'rebuild', '--directory', 'native', '--loglevel=warn'];
const nodedir = localNodeDir();
if (nodedir) args.push(`--nodedir=${nodedir}`);
const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'] });
if (r.status !== 0) {
  console.error('vdisk: native addon not built; using portable fallbacks');
}
process.exit(0);
