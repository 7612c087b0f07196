export interface MetaContext {
  readonly id: number;
  readonly name: string;
}

/**
 * Which offered contexts answer a LIST query set: no queries lists all; a
 * namespace query ("base:", "qemu:") lists that namespace; otherwise exact
 * names. Unknown queries select nothing (proto.md: ignore them silently).
 */
export function matchListQueries(offered: readonly MetaContext[], queries: readonly string[]): MetaContext[] {
  if (queries.length === 0) return [...offered];
  const out: MetaContext[] = [];
  for (const c of offered) {
    const ns = c.name.slice(0, c.name.indexOf(':') + 1);
    if (queries.some((q) => q === c.name || q === ns)) out.push(c);
  }
  return out;
}

/** Which offered contexts a SET query set selects: exact names only, each once. */
export function matchSetQueries(offered: readonly MetaContext[], queries: readonly string[]): MetaContext[] {
  return offered.filter((c) => queries.includes(c.name));
}
