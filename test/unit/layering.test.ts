import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

// DESIGN.md: imports go down only. A layer may import itself, anything listed
// after it, and util/ + errors.ts. cli sits on top of daemon, qmp and nbd.
const ORDER = ['cli', 'daemon', 'qmp', 'nbd', 'jobs', 'block', 'formats', 'host'] as const;
const ALLOWED: Record<string, readonly string[]> = {
  cli: ['cli', 'daemon', 'qmp', 'nbd', 'jobs', 'block', 'formats', 'host'],
  daemon: ['daemon', 'qmp', 'nbd', 'jobs', 'block', 'formats', 'host'],
  qmp: ['qmp', 'jobs', 'block', 'formats', 'host'],
  nbd: ['nbd', 'jobs', 'block', 'formats', 'host'],
  jobs: ['jobs', 'block', 'formats', 'host'],
  block: ['block', 'formats', 'host'],
  formats: ['formats', 'host'],
  host: ['host'],
  util: [],
  root: ['cli', 'daemon', 'qmp', 'nbd', 'jobs', 'block', 'formats', 'host'],
};

const srcRoot = resolve(process.cwd(), 'src');

function walk(dir: string, out: string[]): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.ts')) out.push(p);
  }
  return out;
}

function layerOf(file: string): string {
  const rel = relative(srcRoot, file);
  const first = rel.split(/[\\/]/)[0] ?? '';
  if (!rel.includes('/')) return first === 'errors.ts' ? 'util' : 'root';
  return first;
}

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const out: string[] = [];
  const re = /(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const spec = m[1] ?? m[2];
    if (spec && spec.startsWith('.')) out.push(resolve(dirname(file), spec).replace(/\.js$/, '.ts'));
  }
  return out;
}

test('imports go down the layers of DESIGN.md only', () => {
  const violations: string[] = [];
  for (const file of walk(srcRoot, [])) {
    const from = layerOf(file);
    for (const target of importsOf(file)) {
      const to = layerOf(target);
      if (to === 'util' || to === from) continue;
      if (!(ALLOWED[from] ?? []).includes(to)) {
        violations.push(`${relative(srcRoot, file)} (${from}) imports ${relative(srcRoot, target)} (${to})`);
      }
    }
  }
  assert.deepEqual(violations, []);
  assert.ok(ORDER.length > 0);
});

test('there are no import cycles between modules', () => {
  const graph = new Map<string, string[]>();
  for (const file of walk(srcRoot, [])) graph.set(file, importsOf(file));
  const state = new Map<string, 'visiting' | 'done'>();
  const cycles: string[] = [];
  const visit = (f: string, path: string[]): void => {
    const s = state.get(f);
    if (s === 'done') return;
    if (s === 'visiting') {
      cycles.push([...path.slice(path.indexOf(f)), f].map((p) => relative(srcRoot, p)).join(' -> '));
      return;
    }
    state.set(f, 'visiting');
    for (const t of graph.get(f) ?? []) visit(t, [...path, f]);
    state.set(f, 'done');
  };
  for (const f of graph.keys()) visit(f, []);
  assert.deepEqual(cycles, []);
});
