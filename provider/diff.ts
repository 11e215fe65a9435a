import { deepEqual, isObject, UNKNOWN, type Json } from './values';

/**
 * Property-level diffs in the shape the engine wants (DiffResponse.detailedDiff):
 * paths such as `memory`, `cpu.cores`, `disks[1]`, `labels["app"]`, each with a
 * kind. What a change means is decided per top-level input property by the
 * resource (`classify`): `live` and `restart` changes are updates, `replace`
 * changes need a new object. List items that carry a `name` are matched by name,
 * so adding or removing a disk is an ADD/DELETE of that item, never a reshuffle.
 */
export type UpdateClass = 'live' | 'restart' | 'replace';
export type DiffKind = 'ADD' | 'ADD_REPLACE' | 'DELETE' | 'DELETE_REPLACE' | 'UPDATE' | 'UPDATE_REPLACE';

export interface PropertyChange {
  path: string;
  kind: DiffKind;
}

export interface DiffResult {
  /** Detailed diff, one entry per changed leaf-most path. */
  changes: PropertyChange[];
  /** Changed top-level properties. */
  diffs: string[];
  /** Top-level properties whose change needs a replacement. */
  replaces: string[];
  /** Top-level properties whose change needs a restart of the VM. */
  restarts: string[];
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;
const child = (base: string, key: string): string => (IDENT.test(key) ? (base ? `${base}.${key}` : key) : `${base}["${key}"]`);

function walk(base: string, a: Json, b: Json, out: { path: string; op: 'ADD' | 'DELETE' | 'UPDATE' }[]): void {
  // An unknown new value (preview) may change anything: report it as changed.
  if (b === UNKNOWN || a === UNKNOWN) return void out.push({ path: base, op: a === undefined ? 'ADD' : 'UPDATE' });
  if (deepEqual(a, b)) return;
  if (a === undefined) return void out.push({ path: base, op: 'ADD' });
  if (b === undefined) return void out.push({ path: base, op: 'DELETE' });
  if (isObject(a) && isObject(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) walk(child(base, k), a[k], b[k], out);
    return;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    const keyed = [...a, ...b].every((x) => isObject(x) && typeof x.name === 'string');
    if (keyed) {
      b.forEach((item, i) => walk(`${base}[${i}]`, a.find((x) => x.name === item.name), item, out));
      a.forEach((item, i) => {
        if (!b.some((x) => x.name === item.name)) out.push({ path: `${base}[${i}]`, op: 'DELETE' });
      });
    } else {
      for (let i = 0; i < Math.max(a.length, b.length); i++) walk(`${base}[${i}]`, a[i], b[i], out);
    }
    return;
  }
  out.push({ path: base, op: 'UPDATE' });
}

/**
 * Compares old and new inputs (both already normalised: plain values, server
 * defaults applied on both sides) over the given top-level keys.
 */
export function diffInputs(olds: Record<string, Json>, news: Record<string, Json>, keys: string[], classify: (key: string) => UpdateClass): DiffResult {
  const res: DiffResult = { changes: [], diffs: [], replaces: [], restarts: [] };
  for (const key of keys) {
    const found: { path: string; op: 'ADD' | 'DELETE' | 'UPDATE' }[] = [];
    walk(child('', key), olds[key], news[key], found);
    if (found.length === 0) continue;
    const cls = classify(key);
    res.diffs.push(key);
    if (cls === 'replace') res.replaces.push(key);
    if (cls === 'restart') res.restarts.push(key);
    for (const f of found) res.changes.push({ path: f.path, kind: cls === 'replace' ? (`${f.op}_REPLACE` as DiffKind) : f.op });
  }
  return res;
}

/** Applies ignoreChanges paths (`a`, `a.b`, `labels["x"]` top-level part only) by keeping the old value. */
export function applyIgnoreChanges(olds: Record<string, Json>, news: Record<string, Json>, ignore: string[]): Record<string, Json> {
  const out = { ...news };
  for (const p of ignore) {
    const parts = p.split('.');
    if (parts.length === 1) {
      out[p] = olds[p];
      continue;
    }
    // Nested path: copy the old leaf into a clone of the new value.
    const top = parts[0];
    out[top] = out[top] === undefined ? undefined : JSON.parse(JSON.stringify(out[top]));
    let src = olds[top];
    let dst = out[top];
    for (let i = 1; i < parts.length - 1 && isObject(dst); i++) {
      src = src?.[parts[i]];
      dst = dst[parts[i]];
    }
    const leaf = parts[parts.length - 1];
    if (isObject(dst)) {
      if (src?.[leaf] === undefined) delete dst[leaf];
      else dst[leaf] = src[leaf];
    }
  }
  return out;
}
