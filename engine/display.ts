import { SIG_KEY, UNKNOWN, isObject, isSecret, type Json } from '../provider/values';

/**
 * How the engine shows values and per-property diffs: secrets as [secret],
 * unknowns (preview) as [unknown], paths as the provider names them in its
 * detailed diff (`memory`, `labels.team`, `disks[1]`, `cpu.cores`).
 */
export type DiffKind = 'ADD' | 'ADD_REPLACE' | 'DELETE' | 'DELETE_REPLACE' | 'UPDATE' | 'UPDATE_REPLACE';

export interface PropertyChange {
  path: string;
  kind: DiffKind;
  old?: Json;
  new?: Json;
}

/** Splits `a.b[1]["c.d"]` into ['a', 'b', 1, 'c.d']. */
export function parsePath(p: string): (string | number)[] {
  const out: (string | number)[] = [];
  const re = /([^.[\]]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(p))) {
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else out.push(JSON.parse(`"${m[3]}"`));
  }
  return out;
}

export function getPath(v: Json, p: string): Json {
  let cur = v;
  for (const k of parsePath(p)) {
    if (isSecret(cur)) return { [SIG_KEY]: cur[SIG_KEY], value: undefined };
    if (cur === undefined || cur === null || typeof cur !== 'object') return undefined;
    cur = cur[k as any];
  }
  return cur;
}

/** One value, short, on one line, secrets and unknowns masked. */
export function show(v: Json): string {
  if (v === undefined) return '(none)';
  if (v === UNKNOWN) return '[unknown]';
  if (isSecret(v)) return '[secret]';
  if (Array.isArray(v)) return `[${v.map(show).join(', ')}]`;
  if (isObject(v))
    return `{${Object.entries(v)
      .map(([k, x]) => `${k}: ${show(x)}`)
      .join(', ')}}`;
  return JSON.stringify(v);
}

const SYMBOL: Record<DiffKind, string> = {
  ADD: '+',
  ADD_REPLACE: '+',
  DELETE: '-',
  DELETE_REPLACE: '-',
  UPDATE: '~',
  UPDATE_REPLACE: '~',
};

export function formatChange(c: PropertyChange): string {
  const forces = c.kind.endsWith('_REPLACE') ? ' (forces replacement)' : '';
  if (c.kind.startsWith('ADD')) return `+ ${c.path}: ${show(c.new)}${forces}`;
  if (c.kind.startsWith('DELETE')) return `- ${c.path}: ${show(c.old)}${forces}`;
  return `${SYMBOL[c.kind]} ${c.path}: ${show(c.old)} => ${show(c.new)}${forces}`;
}

/** Top-level keys whose values differ: the per-property view of a refresh. */
export function shallowChanges(
  olds: Record<string, Json>,
  news: Record<string, Json>,
  equal: (a: Json, b: Json) => boolean,
): PropertyChange[] {
  const keys = [...new Set([...Object.keys(olds), ...Object.keys(news)])].sort();
  const out: PropertyChange[] = [];
  for (const k of keys) {
    if (equal(olds[k], news[k])) continue;
    const kind: DiffKind = olds[k] === undefined ? 'ADD' : news[k] === undefined ? 'DELETE' : 'UPDATE';
    out.push({ path: k, kind, old: olds[k], new: news[k] });
  }
  return out;
}
