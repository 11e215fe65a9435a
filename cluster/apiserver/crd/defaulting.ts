import { clone, hasDefault, hasOwn, isObject } from './util';

/**
 * Structural defaulting, after apiextensions' `defaulting/prunenulls.go` and `algorithm.go`:
 *
 * 1. A `null` whose schema is not nullable is removed, unless that schema has a default.
 * 2. A missing property with a `default` gets a copy of it, and so does a non-nullable `null`.
 *    The same goes for `null` array items and map values when items/additionalProperties have
 *    a default.
 * 3. Recursion continues into defaulted values, so defaults nested inside a defaulted `{}` apply.
 *
 * Defaults below a property only apply when that property exists: `spec.x`'s default needs a
 * `spec` (possibly one just created by `spec`'s own default).
 */

type Schema = Record<string, any>;

const nullable = (s: Schema): boolean => s.nullable === true;

/** The schema of a map value (additionalProperties as a schema), if any. */
function mapSchema(s: Schema): Schema | undefined {
  return isObject(s.additionalProperties) ? s.additionalProperties : undefined;
}

function fieldSchema(s: Schema, k: string): Schema | undefined {
  const prop = isObject(s.properties) ? s.properties[k] : undefined;
  return isObject(prop) ? prop : mapSchema(s);
}

/** A null that step 1 removes. */
function isDroppableNull(v: unknown, s: Schema | undefined): boolean {
  return v === null && !!s && !nullable(s) && !hasDefault(s);
}

/** A null (or missing value) that step 2 replaces. */
function takesDefault(v: unknown, present: boolean, s: Schema | undefined): s is Schema {
  return !!s && hasDefault(s) && (!present || (v === null && !nullable(s)));
}

function defaultObject(x: Record<string, any>, s: Schema): void {
  for (const k of Object.keys(x)) if (isDroppableNull(x[k], fieldSchema(s, k))) delete x[k];
  if (isObject(s.properties)) {
    for (const [k, prop] of Object.entries(s.properties)) {
      if (isObject(prop) && takesDefault(x[k], hasOwn(x, k), prop)) x[k] = clone(prop.default);
    }
  }
  const ap = mapSchema(s);
  for (const k of Object.keys(x)) {
    const prop = isObject(s.properties) ? s.properties[k] : undefined;
    if (isObject(prop)) defaultValue(x[k], prop);
    else if (ap) {
      if (takesDefault(x[k], true, ap)) x[k] = clone(ap.default);
      defaultValue(x[k], ap);
    }
  }
}

function defaultArray(x: unknown[], s: Schema): void {
  const items = isObject(s.items) ? s.items : undefined;
  if (!items) return;
  for (let i = 0; i < x.length; i++) {
    if (takesDefault(x[i], true, items)) x[i] = clone(items.default);
    defaultValue(x[i], items);
  }
}

/** Defaults `x` in place against schema node `s`. */
export function defaultValue(x: unknown, s: Schema | undefined): void {
  if (!s) return;
  if (Array.isArray(x)) defaultArray(x, s);
  else if (isObject(x)) defaultObject(x, s);
}
