import { Cause, cause } from './causes';
import { deepEqual, isObject, path, typeOf } from './util';

/**
 * Structural schema rules (apiextensions `schema/validation.go` and `complete.go`). A structural
 * schema is what makes pruning and defaulting well defined:
 *
 * - every node has a `type`, except under x-kubernetes-int-or-string or
 *   x-kubernetes-preserve-unknown-fields (and embedded resources, which must be objects anyway);
 * - inside allOf/anyOf/oneOf/not there is only value validation: no type, default, description,
 *   nullable, additionalProperties or x-kubernetes-* extensions;
 * - fields named in the root's logical junctors also exist in the structural part;
 * - root metadata may only restrict name and generateName.
 */

type Level = 'root' | 'item' | 'field';
type Schema = Record<string, any>;

const INT_OR_STRING_ANY_OF = [{ type: 'integer' }, { type: 'string' }];
const METADATA_FORBIDDEN = 'must not specify anything other than name and generateName, but metadata is implicitly specified';

/** `anyOf: [{type: integer}, {type: string}]`, the one place `type` may appear in a junctor. */
function isIntOrStringAnyOf(s: Schema): boolean {
  return deepEqual(s.anyOf, INT_OR_STRING_ANY_OF);
}

/** `allOf: [{anyOf: [{type: integer}, {type: string}]}, ...]`. */
function isIntOrStringAllOf(s: Schema): boolean {
  return Array.isArray(s.allOf) && s.allOf.length >= 1 && isObject(s.allOf[0]) && deepEqual(s.allOf[0].anyOf, INT_OR_STRING_ANY_OF);
}

const NESTED_FORBIDDEN: [key: string, when: (v: unknown) => boolean, detail: string][] = [
  ['type', (v) => typeof v === 'string' && v !== '', 'must be empty to be structural'],
  ['additionalProperties', (v) => v !== undefined, 'must be undefined to be structural'],
  ['default', (v) => v !== undefined && v !== null, 'must be undefined to be structural'],
  ['title', (v) => typeof v === 'string' && v !== '', 'must be empty to be structural'],
  ['description', (v) => typeof v === 'string' && v !== '', 'must be empty to be structural'],
  ['nullable', (v) => v === true, 'must be false to be structural'],
  ['externalDocs', (v) => v !== undefined, 'must be undefined to be structural'],
  ['x-kubernetes-preserve-unknown-fields', (v) => v === true, 'must be false to be structural'],
  ['x-kubernetes-embedded-resource', (v) => v === true, 'must be false to be structural'],
  ['x-kubernetes-int-or-string', (v) => v === true, 'must be false to be structural'],
  ['x-kubernetes-list-map-keys', (v) => Array.isArray(v) && v.length > 0, 'must be empty to be structural'],
  ['x-kubernetes-list-type', (v) => v !== undefined, 'must be undefined to be structural'],
  ['x-kubernetes-map-type', (v) => v !== undefined, 'must be undefined to be structural'],
  ['x-kubernetes-validations', (v) => Array.isArray(v) && v.length > 0, 'must be empty to be structural'],
];

/** The allOf/anyOf/oneOf/not of a node; anyOf (or allOf[0].anyOf) may be the int-or-string idiom. */
function junctors(v: Schema, skipAnyOf: boolean, skipFirstAllOfAnyOf: boolean, at: string, out: Cause[]): void {
  if (!skipAnyOf && Array.isArray(v.anyOf))
    v.anyOf.forEach((x: unknown, i: number) => nested(x, false, path.index(path.child(at, 'anyOf'), i), out));
  if (Array.isArray(v.allOf))
    v.allOf.forEach((x: unknown, i: number) => nested(x, skipFirstAllOfAnyOf && i === 0, path.index(path.child(at, 'allOf'), i), out));
  if (Array.isArray(v.oneOf))
    v.oneOf.forEach((x: unknown, i: number) => nested(x, false, path.index(path.child(at, 'oneOf'), i), out));
  if (v.not !== undefined) nested(v.not, false, path.child(at, 'not'), out);
}

/** A schema inside a junctor: value validation only. */
function nested(v: unknown, skipAnyOf: boolean, at: string, out: Cause[]): void {
  if (!isObject(v)) return;
  junctors(v, skipAnyOf, false, at, out);
  if (isObject(v.items)) nested(v.items, false, path.child(at, 'items'), out);
  if (isObject(v.properties))
    for (const [k, p] of Object.entries(v.properties)) nested(p, false, path.key(path.child(at, 'properties'), k), out);
  for (const [key, when, detail] of NESTED_FORBIDDEN) if (when(v[key])) out.push(cause.forbidden(path.child(at, key), detail));
  // Reasoning about metadata in junctors could restrict it in ways pruning cannot honour.
  if (isObject(v.properties) && v.properties.metadata !== undefined)
    out.push(cause.forbidden(path.key(path.child(at, 'properties'), 'metadata'), 'must not be specified in a nested context'));
}

/** Root metadata: `type: object` and at most name/generateName, nothing else. */
function metadataRules(m: unknown, checkMetadata: boolean, lvl: Level, at: string, out: Cause[]): void {
  if (!isObject(m)) return;
  if (checkMetadata && m.type !== 'object') out.push(cause.invalid(path.child(at, 'type'), m.type ?? '', 'must be object'));
  if (lvl !== 'root') return;
  const props = isObject(m.properties) ? Object.keys(m.properties) : [];
  const onlyNames = props.every((k) => k === 'name' || k === 'generateName');
  // default is reported separately ("must not be set in top-level metadata"); example and
  // externalDocs are not part of a structural schema at all.
  const extra = Object.keys(m).some((k) => !['type', 'properties', 'default', 'example', 'externalDocs'].includes(k));
  if (extra || !onlyNames) out.push(cause.forbidden(at, METADATA_FORBIDDEN));
}

function typeRules(s: Schema, lvl: Level, at: string, out: Cause[]): void {
  const embedded = s['x-kubernetes-embedded-resource'] === true;
  const t = typeOf(s);
  const typeAt = path.child(at, 'type');
  if (embedded && t !== 'object') {
    const msg = 'must be object if x-kubernetes-embedded-resource is true';
    out.push(t ? cause.invalid(typeAt, t, msg) : cause.required(typeAt, msg));
  } else if (!t && s['x-kubernetes-int-or-string'] !== true && s['x-kubernetes-preserve-unknown-fields'] !== true) {
    const where = { root: 'at the root', item: 'for specified array items', field: 'for specified object fields' }[lvl];
    out.push(cause.required(typeAt, `must not be empty ${where}`));
  }
  if (embedded && s.additionalProperties !== undefined)
    out.push(cause.forbidden(path.child(at, 'additionalProperties'), 'must not be used if x-kubernetes-embedded-resource is set'));
  if (lvl === 'root' && t && t !== 'object') out.push(cause.invalid(typeAt, t, 'must be object at the root'));
}

/** apiVersion/kind must be strings and metadata an object where they mean TypeMeta/ObjectMeta. */
function resourceMetaRules(s: Schema, lvl: Level, at: string, out: Cause[]): void {
  const checkMetadata = lvl === 'root' || s['x-kubernetes-embedded-resource'] === true;
  const props = isObject(s.properties) ? s.properties : {};
  const propsAt = path.child(at, 'properties');
  for (const k of ['kind', 'apiVersion']) {
    if (checkMetadata && isObject(props[k]) && props[k].type !== 'string')
      out.push(cause.invalid(path.child(path.key(propsAt, k), 'type'), props[k].type ?? '', 'must be string'));
  }
  if (props.metadata !== undefined) metadataRules(props.metadata, checkMetadata, lvl, path.key(propsAt, 'metadata'), out);
}

function extensionRules(s: Schema, at: string, out: Cause[]): void {
  if (s['x-kubernetes-int-or-string'] !== true) return;
  for (const k of ['x-kubernetes-preserve-unknown-fields', 'x-kubernetes-embedded-resource'])
    if (s[k] === true) out.push(cause.invalid(path.child(at, k), true, 'must be false if x-kubernetes-int-or-string is true'));
}

function invariants(s: unknown, lvl: Level, at: string, out: Cause[]): void {
  if (!isObject(s)) return;
  if (s.type === 'array' && !isObject(s.items)) out.push(cause.required(path.child(at, 'items'), 'must be specified'));
  if (isObject(s.items)) invariants(s.items, 'item', path.child(at, 'items'), out);
  if (isObject(s.properties))
    for (const [k, v] of Object.entries(s.properties)) invariants(v, 'field', path.key(path.child(at, 'properties'), k), out);
  if (s.additionalProperties !== undefined) {
    if (lvl === 'root') out.push(cause.forbidden(path.child(at, 'additionalProperties'), 'must not be used at the root'));
    if (isObject(s.additionalProperties)) invariants(s.additionalProperties, 'field', path.child(at, 'additionalProperties'), out);
  }
  extensionRules(s, at, out);
  junctors(s, isIntOrStringAnyOf(s), isIntOrStringAllOf(s), at, out);
  typeRules(s, lvl, at, out);
  resourceMetaRules(s, lvl, at, out);
  if (s['x-kubernetes-embedded-resource'] === true && s['x-kubernetes-preserve-unknown-fields'] !== true) {
    if (!isObject(s.properties) || Object.keys(s.properties).length === 0)
      out.push(
        cause.required(
          path.child(at, 'properties'),
          'must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields',
        ),
      );
  }
}

/** A field named in a junctor must also be specified in the structural schema `s`. */
function nestedCompleteness(v: unknown, s: Schema | undefined, sAt: string, vAt: string, out: Cause[]): void {
  if (!isObject(v)) return;
  if (!s) {
    out.push(cause.required(sAt, `because it is defined in ${vAt}`));
    return;
  }
  completeness(v, s, sAt, vAt, out);
  if (v.items !== undefined) nestedCompleteness(v.items, isObject(s.items) ? s.items : undefined, path.child(sAt, 'items'), path.child(vAt, 'items'), out);
  if (!isObject(v.properties)) return;
  for (const [k, vp] of Object.entries(v.properties)) {
    const sp = isObject(s.properties) ? s.properties[k] : undefined;
    const sKey = path.key(path.child(sAt, 'properties'), k);
    const vKey = path.key(path.child(vAt, 'properties'), k);
    if (!isObject(sp)) out.push(cause.required(sKey, `because it is defined in ${vKey}`));
    else nestedCompleteness(vp, sp, sKey, vKey, out);
  }
}

function completeness(v: Schema, s: Schema, sAt: string, vAt: string, out: Cause[]): void {
  if (v.not !== undefined) nestedCompleteness(v.not, s, sAt, path.child(vAt, 'not'), out);
  for (const k of ['allOf', 'anyOf', 'oneOf'] as const)
    if (Array.isArray(v[k])) v[k].forEach((x: unknown, i: number) => nestedCompleteness(x, s, sAt, path.index(path.child(vAt, k), i), out));
}

/**
 * Structural-schema violations of a version's openAPIV3Schema at `at`. Like upstream, only the
 * root's junctors are checked for completeness.
 */
export function structuralRules(schema: unknown, at: string): Cause[] {
  const out: Cause[] = [];
  invariants(schema, 'root', at, out);
  if (isObject(schema)) completeness(schema, schema, at, at, out);
  return out;
}
