// After tsc: makes the CLI entry point executable (tsc keeps the shebang, not the
// mode), and removes compiled files whose source is gone. The build is incremental,
// so a renamed or deleted module's old .js stayed in dist/ — and the test runner,
// which lists dist/test, went on running a deleted test against deleted code.
import { chmodSync, existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';

const bin = 'dist/src/cli/main.js';
if (existsSync(bin)) chmodSync(bin, 0o755);

const COMPILED = /\.(d\.ts|js|js\.map|d\.ts\.map)$/;

function prune(outDir, srcDir) {
  if (!existsSync(outDir)) return;
  for (const name of readdirSync(outDir)) {
    const out = join(outDir, name);
    if (statSync(out).isDirectory()) {
      prune(out, join(srcDir, name));
      if (readdirSync(out).length === 0) rmSync(out, { recursive: true });
      continue;
    }
    if (!COMPILED.test(name)) continue;
    const base = name.replace(COMPILED, '');
    if (!existsSync(join(srcDir, `${base}.ts`)) && !existsSync(join(srcDir, `${base}.mts`))) {
      rmSync(out);
      console.log(`postbuild: removed ${out} (its source is gone)`);
    }
  }
}

for (const top of ['src', 'test']) prune(join('dist', top), top);
