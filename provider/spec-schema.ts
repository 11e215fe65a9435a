import Ajv, { type ErrorObject, type ValidateFunction } from 'ajv';
import { KINDS } from '../controller/api/schema';
import { clone, deepEqual, isObject, type Json } from './values';

/**
 * The provider's view of the CRD spec schemas in controller/api/schema.ts (the
 * single source of the fields): validation at `check` time (with unknown fields
 * refused, since the API server would prune them silently and leave a perpetual
 * diff), the server's structural defaults (so diffs ignore values the server
 * fills in), and the `x-kubevm-update` class of each VirtualMachine field.
 */
type Schema = Record<string, any>;

export function specSchema(kind: string): Schema {
  const k = KINDS.find((x) => x.kind === kind);
  if (!k) throw new Error(`unknown kind ${kind}`);
  return k.spec;
}

/** Same schema with `additionalProperties: false` on every object without a map schema. */
function closed(s: Schema): Schema {
  if (!isObject(s)) return s;
  const out: Schema = {};
  for (const [k, v] of Object.entries(s)) {
    if (k === 'properties') out[k] = Object.fromEntries(Object.entries(v as Schema).map(([p, ps]) => [p, closed(ps)]));
    else if (k === 'items' || k === 'additionalProperties' || k === 'not') out[k] = closed(v);
    else if (k.startsWith('x-')) continue;
    else out[k] = v;
  }
  if (s.type === 'object' && s.properties && s.additionalProperties === undefined) out.additionalProperties = false;
  return out;
}

const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
const validators = new Map<string, ValidateFunction>();

function validator(kind: string): ValidateFunction {
  let v = validators.get(kind);
  if (!v) {
    v = ajv.compile(closed(specSchema(kind)));
    validators.set(kind, v);
  }
  return v;
}

export interface Failure {
  property: string;
  reason: string;
}

/** ajv's instancePath `/disks/0/bus` → the property path `disks[0].bus`. */
export function propertyPath(pointer: string): string {
  let out = '';
  for (const seg of pointer.split('/').slice(1)) out += /^\d+$/.test(seg) ? `[${seg}]` : out ? `.${seg}` : seg;
  return out;
}

function describe(e: ErrorObject, value: Json): Failure {
  const at = propertyPath(e.instancePath);
  if (e.keyword === 'additionalProperties') {
    const p = at ? `${at}.${e.params.additionalProperty}` : e.params.additionalProperty;
    return { property: p, reason: `${p}: unknown property` };
  }
  if (e.keyword === 'required') {
    const p = at ? `${at}.${e.params.missingProperty}` : e.params.missingProperty;
    return { property: p, reason: `${p}: required` };
  }
  const rule = e.keyword === 'enum' ? `must be one of ${(e.params.allowedValues as unknown[]).map((x) => JSON.stringify(x)).join(', ')}` : e.message ?? e.keyword;
  return { property: at, reason: `${at}: value ${JSON.stringify(value)} ${rule}` };
}

function at(v: Json, pointer: string): Json {
  let cur = v;
  for (const seg of pointer.split('/').slice(1)) cur = cur?.[seg];
  return cur;
}

/** Validates a spec (unknown values already removed); failures name the property, the value and the rule. */
export function validateSpec(kind: string, spec: Json): Failure[] {
  const v = validator(kind);
  if (v(spec)) return [];
  const seen = new Set<string>();
  const out: Failure[] = [];
  for (const e of v.errors ?? []) {
    if (e.keyword === 'if') continue;
    const f = describe(e, at(spec, e.instancePath));
    if (!seen.has(f.reason)) {
      seen.add(f.reason);
      out.push(f);
    }
  }
  return out;
}

/** A copy with the structural defaults the API server would apply. */
export function withDefaults(v: Json, s: Schema): Json {
  const x = clone(v);
  applyDefaults(x, s);
  return x;
}

function applyDefaults(x: Json, s: Schema | undefined): void {
  if (!s) return;
  if (Array.isArray(x)) {
    for (const item of x) applyDefaults(item, s.items);
  } else if (isObject(x)) {
    for (const [k, p] of Object.entries((s.properties ?? {}) as Schema)) {
      if (x[k] === undefined && p.default !== undefined) x[k] = clone(p.default);
      applyDefaults(x[k], p);
    }
    if (isObject(s.additionalProperties)) for (const k of Object.keys(x)) applyDefaults(x[k], s.additionalProperties);
  }
}

/**
 * The live value with server-filled defaults removed wherever `like` (the last
 * inputs, or nothing on import) did not set them: what the user would have
 * written to get this object.
 */
export function withoutDefaults(live: Json, s: Schema | undefined, like: Json): Json {
  if (!s) return live;
  if (Array.isArray(live)) {
    const likeArr = Array.isArray(like) ? like : [];
    return live.map((item, i) => withoutDefaults(item, s.items, matchItem(item, likeArr, i)));
  }
  if (!isObject(live)) return live;
  const likeObj = isObject(like) ? like : {};
  const out: Record<string, Json> = {};
  for (const [k, v] of Object.entries(live)) {
    const p = s.properties?.[k] ?? (isObject(s.additionalProperties) ? s.additionalProperties : undefined);
    if (likeObj[k] === undefined && p?.default !== undefined && deepEqual(v, p.default)) continue;
    out[k] = withoutDefaults(v, p, likeObj[k]);
  }
  return out;
}

/** The element of `like` that corresponds to `item`: same `name` (list-map key), else same index. */
function matchItem(item: Json, like: Json[], i: number): Json {
  if (isObject(item) && item.name !== undefined) return like.find((x) => isObject(x) && x.name === item.name);
  return like[i];
}
