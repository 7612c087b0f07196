#!/usr/bin/env node
import { run } from './program.js';

// No top-level await: the installed `vdisk` (bin/vdisk.cjs) runs this module bundled as CommonJS.
void run(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
