/** Small helpers for plain JSON values (the only kind of data this module handles). */

export type Json = any;

export type JsonObject = Record<string, Json>;

export function isObject(v: Json): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep copy; JSON data has no cycles, dates or class instances. */
export function clone<T extends Json>(v: T): T {
  if (v === undefined) return v;
  // JSON round trip rather than structuredClone: under jest's vm sandbox structuredClone
  // returns objects of another realm, which deep-equality checks treat as different.
  return JSON.parse(JSON.stringify(v));
}

/** Structural equality where object key order does not matter (as in Go's DeepEqual on maps). */
export function deepEqual(a: Json, b: Json): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (isObject(a)) {
    if (!isObject(b)) return false;
    const ka = Object.keys(a);
    if (ka.length !== Object.keys(b).length) return false;
    return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

/** JSON text with object keys sorted, so equal values always give equal strings. */
export function canonicalJson(v: Json): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (isObject(v)) {
    const keys = Object.keys(v).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v === undefined ? null : v);
}

export function hasOwn(o: JsonObject, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}
