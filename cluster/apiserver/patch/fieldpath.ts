/**
 * Field paths and field sets in the structured-merge-diff model used by managedFields.
 *
 * A path is a list of FieldsV1 tokens:
 *   `f:<name>`   a field of a map/struct
 *   `k:<json>`   an item of a map-list, identified by its key fields (JSON object, keys sorted)
 *   `v:<json>`   an item of a set-list, identified by its value
 *   `i:<n>`      an item by index (only read, never produced: atomic lists are owned whole)
 * A FieldSet is a set of such paths. In FieldsV1 JSON a path that is itself a member and also
 * has members below it is marked with a `.` key.
 */
import { Json, JsonObject, canonicalJson, deepEqual, isObject } from './json';
import { declaredListKind, fieldSchema, isAtomicMap, itemSchema, ListKind } from './schema';

export type Path = string[];

const keyOf = (path: Path): string => JSON.stringify(path);

export class FieldSet {
  private readonly paths = new Map<string, Path>();

  constructor(paths: Iterable<Path> = []) {
    for (const p of paths) this.add(p);
  }

  add(path: Path): void {
    this.paths.set(keyOf(path), path);
  }

  delete(path: Path): void {
    this.paths.delete(keyOf(path));
  }

  has(path: Path): boolean {
    return this.paths.has(keyOf(path));
  }

  get size(): number {
    return this.paths.size;
  }

  get empty(): boolean {
    return this.paths.size === 0;
  }

  [Symbol.iterator](): IterableIterator<Path> {
    return this.paths.values();
  }

  union(other: FieldSet): FieldSet {
    return new FieldSet([...this, ...other]);
  }

  difference(other: FieldSet): FieldSet {
    return new FieldSet([...this].filter((p) => !other.has(p)));
  }

  intersection(other: FieldSet): FieldSet {
    return new FieldSet([...this].filter((p) => other.has(p)));
  }

  /** True when `path` itself or anything below it is in the set. */
  coversAtOrBelow(path: Path): boolean {
    for (const p of this) if (isPrefix(path, p)) return true;
    return false;
  }

  /** True when something strictly below `path` is in the set. */
  hasBelow(path: Path): boolean {
    for (const p of this) if (p.length > path.length && isPrefix(path, p)) return true;
    return false;
  }

  /** Paths in a stable order (parents before children, then token order). */
  sorted(): Path[] {
    return [...this].sort(comparePaths);
  }

  toFieldsV1(): JsonObject {
    const root: JsonObject = {};
    for (const path of this.sorted()) {
      let node = root;
      for (const token of path) node = node[token] ??= {};
    }
    // A member that also has children would be indistinguishable from a mere parent: mark it.
    markMembers(root, this, []);
    return sortTree(root);
  }

  static fromFieldsV1(fields: Json): FieldSet {
    const set = new FieldSet();
    const walk = (node: Json, path: Path) => {
      if (!isObject(node)) return;
      const keys = Object.keys(node);
      if (path.length > 0 && (keys.length === 0 || keys.includes('.'))) set.add(path);
      for (const k of keys) if (k !== '.') walk(node[k], [...path, k]);
    };
    walk(fields, []);
    return set;
  }
}

function markMembers(node: JsonObject, set: FieldSet, path: Path): void {
  for (const [token, child] of Object.entries(node)) {
    if (token === '.') continue;
    const childPath = [...path, token];
    if (Object.keys(child).length > 0 && set.has(childPath)) child['.'] = {};
    markMembers(child, set, childPath);
  }
}

/** Upstream writes '.' first, then the children in token order. */
function sortTree(node: JsonObject): JsonObject {
  const out: JsonObject = {};
  const keys = Object.keys(node).sort((a, b) => (a === '.' ? -1 : b === '.' ? 1 : a < b ? -1 : a > b ? 1 : 0));
  for (const k of keys) out[k] = sortTree(node[k]);
  return out;
}

export function isPrefix(prefix: Path, path: Path): boolean {
  return prefix.length <= path.length && prefix.every((t, i) => t === path[i]);
}

export function comparePaths(a: Path, b: Path): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
  }
  return a.length - b.length;
}

// ---- tokens ---------------------------------------------------------------------------------

export const fieldToken = (name: string): string => `f:${name}`;
export const valueToken = (value: Json): string => `v:${canonicalJson(value)}`;

export function keyToken(item: JsonObject, keys: string[]): string {
  const id: JsonObject = {};
  for (const k of [...keys].sort()) if (item[k] !== undefined) id[k] = item[k];
  return `k:${canonicalJson(id)}`;
}

/** Human form used in conflict messages: `.spec.containers[name="c"].image`. */
export function formatPath(path: Path): string {
  return path.map(formatToken).join('');
}

function formatToken(token: string): string {
  const body = token.slice(2);
  switch (token.slice(0, 2)) {
    case 'f:':
      return `.${body}`;
    case 'k:': {
      const id = safeParse(body);
      if (!isObject(id)) return `[${body}]`;
      return `[${Object.keys(id)
        .map((k) => `${k}=${formatValue(id[k])}`)
        .join(',')}]`;
    }
    case 'v:':
      return `[=${formatValue(safeParse(body))}]`;
    case 'i:':
      return `[${body}]`;
    default:
      return token;
  }
}

function formatValue(v: Json): string {
  return typeof v === 'string' ? JSON.stringify(v) : canonicalJson(v);
}

function safeParse(text: string): Json {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// ---- navigation in objects ------------------------------------------------------------------

/** Does `item` (a list element) match the list token? */
export function itemMatches(item: Json, token: string): boolean {
  const body = token.slice(2);
  if (token.startsWith('v:')) return canonicalJson(item) === canonicalJson(safeParse(body));
  if (token.startsWith('k:')) {
    const id = safeParse(body);
    return isObject(id) && isObject(item) && Object.keys(id).every((k) => deepEqual(item[k], id[k]));
  }
  return false;
}

/** Index in `list` of the element a list token (`k:`, `v:`, `i:`) designates, or -1. */
export function findItem(list: Json[], token: string): number {
  if (token.startsWith('i:')) {
    const i = Number(token.slice(2));
    return Number.isInteger(i) && i >= 0 && i < list.length ? i : -1;
  }
  return list.findIndex((item) => itemMatches(item, token));
}

/** The value at `path`, or undefined. */
export function getAt(obj: Json, path: Path): Json {
  let cur = obj;
  for (const token of path) {
    if (token.startsWith('f:')) {
      if (!isObject(cur)) return undefined;
      cur = cur[token.slice(2)];
    } else {
      if (!Array.isArray(cur)) return undefined;
      const i = findItem(cur, token);
      cur = i < 0 ? undefined : cur[i];
    }
    if (cur === undefined) return undefined;
  }
  return cur;
}

/** Remove the field or list element at `path` (in place). Returns whether something was removed. */
export function removeAt(obj: Json, path: Path): boolean {
  if (path.length === 0) return false;
  const parent = getAt(obj, path.slice(0, -1));
  const last = path[path.length - 1];
  if (last.startsWith('f:')) {
    const name = last.slice(2);
    if (!isObject(parent) || !(name in parent)) return false;
    delete parent[name];
    return true;
  }
  if (!Array.isArray(parent)) return false;
  const i = findItem(parent, last);
  if (i < 0) return false;
  parent.splice(i, 1);
  return true;
}

// ---- from objects to field sets -------------------------------------------------------------

/** Server-managed or identifying fields that are never owned (upstream's stripMeta set). */
const IGNORED_TOP_LEVEL = new Set(['apiVersion', 'kind']);
const IGNORED_METADATA = new Set([
  'name',
  'namespace',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'selfLink',
  'managedFields',
  'clusterName',
]);

/** One owned path with the value found there; `item` marks a map-list element's own path. */
export interface Leaf {
  path: Path;
  value: Json;
  item: boolean;
}

/**
 * All owned paths of an object, keyed by path: scalars, nulls, empty maps/lists, atomic lists and
 * maps, set elements, and map-list elements (as members, plus their fields).
 */
export function flatten(obj: Json, schema: Json): Map<string, Leaf> {
  const out = new Map<string, Leaf>();
  if (!isObject(obj)) return out;
  const add = (path: Path, value: Json, item = false): void => {
    out.set(keyOf(path), { path, value, item });
  };

  const walk = (value: Json, s: Json, path: Path): void => {
    if (isObject(value)) {
      if (isAtomicMap(s) || Object.keys(value).length === 0) return add(path, value);
      for (const [k, v] of Object.entries(value)) walk(v, fieldSchema(s, k), [...path, fieldToken(k)]);
      return;
    }
    if (Array.isArray(value)) {
      const kind = listKind(s, value);
      if (kind.type === 'atomic' || value.length === 0) return add(path, value);
      const items = itemSchema(s);
      for (const item of value) {
        if (kind.type === 'set') {
          add([...path, valueToken(item)], item);
        } else {
          const itemPath = [...path, keyToken(item, kind.keys)];
          add(itemPath, item, true);
          for (const [k, v] of Object.entries(item as JsonObject)) walk(v, fieldSchema(items, k), [...itemPath, fieldToken(k)]);
        }
      }
      return;
    }
    if (value !== undefined) add(path, value);
  };

  for (const [k, v] of Object.entries(obj)) {
    if (IGNORED_TOP_LEVEL.has(k)) continue;
    const s = fieldSchema(schema, k);
    if (k === 'metadata' && isObject(v)) {
      for (const [mk, mv] of Object.entries(v)) {
        if (!IGNORED_METADATA.has(mk)) walk(mv, fieldSchema(s, mk), [fieldToken('metadata'), fieldToken(mk)]);
      }
    } else {
      walk(v, s, [fieldToken(k)]);
    }
  }
  return out;
}

/**
 * The list semantics to use for a concrete list value. A map-list whose items lack every key
 * or repeat a key, or a set with non-scalar items, is treated as atomic rather than failing:
 * ownership then covers the list as a whole.
 */
export function listKind(schema: Json, list: Json[]): ListKind {
  const declared = declaredListKind(schema);
  if (declared.type === 'set') {
    return list.every((v) => v === null || typeof v !== 'object') ? declared : { type: 'atomic' };
  }
  if (declared.type === 'map') {
    const seen = new Set<string>();
    for (const item of list) {
      if (!isObject(item) || !declared.keys.some((k) => item[k] !== undefined)) return { type: 'atomic' };
      const token = keyToken(item, declared.keys);
      if (seen.has(token)) return { type: 'atomic' };
      seen.add(token);
    }
  }
  return declared;
}

export function fieldSetFromLeaves(leaves: Map<string, Leaf>): FieldSet {
  return new FieldSet([...leaves.values()].map((l) => l.path));
}

export interface Comparison {
  added: FieldSet;
  modified: FieldSet;
  removed: FieldSet;
}

/** Upstream typed Compare: which owned paths appear, change value, or disappear. */
export function compareObjects(oldObj: Json, newObj: Json, schema: Json): Comparison {
  const before = flatten(oldObj, schema);
  const after = flatten(newObj, schema);
  const added = new FieldSet();
  const modified = new FieldSet();
  const removed = new FieldSet();
  for (const [k, leaf] of after) {
    const prev = before.get(k);
    if (!prev) added.add(leaf.path);
    else if (!leaf.item && !deepEqual(prev.value, leaf.value)) modified.add(leaf.path);
  }
  for (const [k, leaf] of before) if (!after.has(k)) removed.add(leaf.path);
  return { added, modified, removed };
}
