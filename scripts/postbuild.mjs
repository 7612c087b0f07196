// Makes the CLI entry point executable after tsc (tsc keeps the shebang, not the mode).
import { chmodSync, existsSync } from 'node:fs';
const bin = 'dist/src/cli/main.js';
if (existsSync(bin)) chmodSync(bin, 0o755);
