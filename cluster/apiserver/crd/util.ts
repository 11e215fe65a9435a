/** Small JSON helpers shared by the CRD modules. Values are plain decoded JSON. */

export function isObject(x: unknown): x is Record<string, any> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Deep copy of a JSON value; `structuredClone` would also copy non-JSON types we never see here. */
export function clone<T>(x: T): T {
  if (Array.isArray(x)) return x.map(clone) as unknown as T;
  if (isObject(x)) {
    const out: Record<string, any> = {};
    for (const [k, v] of Object.entries(x)) {
      // JSON.parse makes "__proto__" an ordinary key; plain assignment would set the prototype.
      if (k === '__proto__') Object.defineProperty(out, k, { value: clone(v), enumerable: true, writable: true, configurable: true });
      else out[k] = clone(v);
    }
    return out as T;
  }
  return x;
}

export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a)) return Array.isArray(b) && a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => hasOwn(b, k) && deepEqual(a[k], b[k]));
  }
  return false;
}

/**
 * Field paths in upstream's notation: `spec.versions[0].schema.openAPIV3Schema.properties[spec]`.
 * `child` appends `.name`, `key` appends `[key]` (map keys), `index` appends `[i]`.
 */
export const path = {
  child: (p: string, name: string): string => (p ? `${p}.${name}` : name),
  key: (p: string, k: string): string => `${p}[${k}]`,
  index: (p: string, i: number): string => `${p}[${i}]`,
};

/** The `type` keyword when it is a single string; anything else counts as "no type". */
export function typeOf(s: any): string {
  return isObject(s) && typeof s.type === 'string' ? s.type : '';
}

/** `default: null` decodes to "no default" upstream (JSON{Object: nil}). */
export function hasDefault(s: Record<string, any>): boolean {
  return s.default !== undefined && s.default !== null;
}

export function hasOwn(o: object, k: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, k);
}

/** A Map bounded to `max` entries that evicts the least recently used one. */
export class Lru<K, V> {
  private readonly map = new Map<K, V>();
  constructor(private readonly max: number) {}

  get(k: K): V | undefined {
    const v = this.map.get(k);
    if (v !== undefined) {
      // Map keeps insertion order: re-inserting marks the entry as most recently used.
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }

  set(k: K, v: V): void {
    this.map.delete(k);
    this.map.set(k, v);
    if (this.map.size > this.max) this.map.delete(this.map.keys().next().value as K);
  }

  deleteWhere(pred: (k: K) => boolean): void {
    for (const k of [...this.map.keys()]) if (pred(k)) this.map.delete(k);
  }
}
