import { Cause, cause } from './causes';
import { patternError } from './schema-validator';
import { hasDefault, isObject, path, typeOf } from './util';

/**
 * The generic checks apiextensions runs over every node of a CRD's openAPIV3Schema
 * (`ValidateCustomResourceDefinitionOpenAPISchema` and `specStandardValidatorV3`): allowed
 * types, unsupported JSON-schema keywords, where defaults may appear, and the SSA markers.
 * Structural-schema rules live in structural.ts.
 */

const OPENAPI_TYPES = ['array', 'boolean', 'integer', 'number', 'object', 'string'];
const META_FIELDS = new Set(['metadata', 'kind', 'apiVersion']);
const UNSUPPORTED: Record<string, string> = {
  id: 'id is not supported',
  additionalItems: 'additionalItems is not supported',
  patternProperties: 'patternProperties is not supported',
  definitions: 'definitions is not supported',
  dependencies: 'dependencies is not supported',
  $ref: '$ref is not supported',
};

interface Ctx {
  allowDefaults: boolean;
  /** Appended to "must not be set" when defaults are forbidden here. */
  disallowReason: string;
  /** Below the root's (or an embedded resource's) apiVersion, kind or metadata. */
  insideResourceMeta: boolean;
}

const ROOT_CTX: Ctx = { allowDefaults: true, disallowReason: '', insideResourceMeta: false };

function forbidDefaults(ctx: Ctx, reason: string): Ctx {
  return { ...ctx, allowDefaults: false, disallowReason: reason };
}

/**
 * Keyword values of the wrong JSON type. Upstream rejects these while decoding JSONSchemaProps;
 * here they would otherwise be silently ignored by the conversion for ajv.
 */
const isCount = (v: unknown): boolean => Number.isInteger(v) && (v as number) >= 0;
const KEYWORD_TYPES: [keys: string[], ok: (v: unknown) => boolean, detail: string][] = [
  [['maximum', 'minimum'], (v) => typeof v === 'number', 'must be a number'],
  [['multipleOf'], (v) => typeof v === 'number' && v > 0, 'must be a positive number'],
  [['maxLength', 'minLength', 'maxItems', 'minItems', 'maxProperties', 'minProperties'], isCount, 'must be a non-negative integer'],
  [
    ['exclusiveMaximum', 'exclusiveMinimum', 'nullable', 'uniqueItems', 'x-kubernetes-preserve-unknown-fields', 'x-kubernetes-embedded-resource', 'x-kubernetes-int-or-string'],
    (v) => typeof v === 'boolean',
    'must be a boolean',
  ],
  [['pattern', 'format', 'description', 'title'], (v) => typeof v === 'string', 'must be a string'],
  [['enum', 'allOf', 'anyOf', 'oneOf'], Array.isArray, 'must be an array'],
  [['required'], (v) => Array.isArray(v) && v.every((x) => typeof x === 'string'), 'must be an array of strings'],
  [['properties', 'not'], isObject, 'must be an object'],
  [['additionalProperties'], (v) => typeof v === 'boolean' || isObject(v), 'must be a boolean or an object'],
];

function keywordTypeRules(s: Record<string, any>, at: string, out: Cause[]): void {
  for (const [keys, ok, detail] of KEYWORD_TYPES)
    for (const k of keys) if (s[k] !== undefined && s[k] !== null && !ok(s[k])) out.push(cause.invalid(path.child(at, k), s[k], detail));
}

/** specStandardValidatorV3.validate: per-node keyword rules. */
function nodeRules(s: Record<string, any>, at: string, ctx: Ctx, out: Cause[]): void {
  if (s.type !== undefined && (typeof s.type !== 'string' || (s.type && !OPENAPI_TYPES.includes(s.type))))
    out.push(cause.notSupported(path.child(at, 'type'), s.type, OPENAPI_TYPES));
  if (hasDefault(s) && !ctx.allowDefaults)
    out.push(cause.forbidden(path.child(at, 'default'), ['must not be set', ctx.disallowReason].filter(Boolean).join(' ')));
  for (const [k, msg] of Object.entries(UNSUPPORTED)) if (s[k] !== undefined) out.push(cause.forbidden(path.child(at, k), msg));
  if (s.type === 'null')
    out.push(cause.forbidden(path.child(at, 'type'), 'type cannot be set to null, use nullable as an alternative'));
  if (Array.isArray(s.items)) out.push(cause.forbidden(path.child(at, 'items'), 'items must be a schema object and not an array'));
  if (ctx.insideResourceMeta && s['x-kubernetes-embedded-resource'] === true)
    out.push(cause.forbidden(path.child(at, 'x-kubernetes-embedded-resource'), 'must not be used inside of resource meta'));
  if (typeof s.pattern === 'string') {
    const err = patternError(s.pattern);
    if (err) out.push(cause.invalid(path.child(at, 'pattern'), s.pattern, `must be a valid regular expression, but isn't: ${err}`));
  }
}

/** Recursion into every subschema, with the context rules of upstream. */
function children(s: Record<string, any>, at: string, ctx: Ctx, isRoot: boolean, out: Cause[]): void {
  if (s.additionalProperties !== undefined) {
    // Defaults in maps under metadata (labels, annotations) cannot be pruned meaningfully.
    const sub = ctx.insideResourceMeta ? forbidDefaults(ctx, 'inside additionalProperties applying to object metadata') : ctx;
    if (isObject(s.additionalProperties)) walk(s.additionalProperties, path.child(at, 'additionalProperties'), sub, false, out);
  }
  if (isObject(s.properties)) {
    for (const [k, v] of Object.entries(s.properties)) {
      let sub = ctx;
      if ((isRoot || s['x-kubernetes-embedded-resource'] === true) && META_FIELDS.has(k)) {
        sub = { ...ctx, insideResourceMeta: true };
        if (isRoot) sub = forbidDefaults(sub, `in top-level ${k}`);
      }
      walk(v, path.key(path.child(at, 'properties'), k), sub, false, out);
    }
  }
  if (isObject(s.not)) walk(s.not, path.child(at, 'not'), ctx, false, out);
  for (const k of ['allOf', 'oneOf', 'anyOf'] as const)
    if (Array.isArray(s[k])) s[k].forEach((x: unknown, i: number) => walk(x, path.index(path.child(at, k), i), ctx, false, out));
  if (isObject(s.items)) walk(s.items, path.child(at, 'items'), ctx, false, out);
}

function typeMustBe(s: Record<string, any>, at: string, want: string, why: string, out: Cause[]): void {
  if (s.type === want) return;
  const f = path.child(at, 'type');
  out.push(typeOf(s) ? cause.invalid(f, s.type, `must be ${want} if ${why}`) : cause.required(f, `must be ${want} if ${why}`));
}

function mapTypeRules(s: Record<string, any>, at: string, out: Cause[]): void {
  const mapType = s['x-kubernetes-map-type'];
  if (mapType === undefined) return;
  typeMustBe(s, at, 'object', 'x-kubernetes-map-type is specified', out);
  if (mapType !== 'atomic' && mapType !== 'granular')
    out.push(cause.notSupported(path.child(at, 'x-kubernetes-map-type'), mapType, ['atomic', 'granular']));
}

/** Items of a set must be atomic, or set membership would depend on merging. */
function setItemRules(s: Record<string, any>, at: string, out: Cause[]): void {
  const items = s.items;
  if (!isObject(items)) return;
  const msg = 'must be atomic as item of a list with x-kubernetes-list-type=set';
  if (items.type === 'array' && items['x-kubernetes-list-type'] !== undefined && items['x-kubernetes-list-type'] !== 'atomic')
    out.push(cause.invalid(path.child(path.child(at, 'items'), 'x-kubernetes-list-type'), items['x-kubernetes-list-type'], msg));
  if (items.type === 'object' && items['x-kubernetes-map-type'] !== 'atomic')
    out.push(cause.invalid(path.child(path.child(at, 'items'), 'x-kubernetes-map-type'), items['x-kubernetes-map-type'] ?? null, msg));
}

function mapListRules(s: Record<string, any>, at: string, keys: string[], out: Cause[]): void {
  const itemsAt = path.child(at, 'items');
  if (keys.length === 0)
    out.push(cause.required(path.child(at, 'x-kubernetes-list-map-keys'), 'must not be empty if x-kubernetes-list-type is map'));
  if (s.items === undefined) out.push(cause.required(itemsAt, 'must have a schema if x-kubernetes-list-type is map'));
  if (!isObject(s.items)) return;
  if (s.items.type !== 'object') {
    out.push(cause.invalid(path.child(itemsAt, 'type'), s.items.type ?? '', "must be object if parent array's x-kubernetes-list-type is map"));
    return;
  }
  const seen = new Set<string>();
  for (const k of keys) {
    const prop = isObject(s.items.properties) ? s.items.properties[k] : undefined;
    if (!isObject(prop))
      out.push(cause.invalid(path.child(at, 'x-kubernetes-list-map-keys'), keys, 'entries must all be names of item properties'));
    else if (prop.type === 'array' || prop.type === 'object')
      out.push(
        cause.invalid(
          path.child(path.key(path.child(itemsAt, 'properties'), k), 'type'),
          s.items.type,
          "must be a scalar type if parent array's x-kubernetes-list-type is map",
        ),
      );
    if (seen.has(k)) out.push(cause.invalid(path.child(at, 'x-kubernetes-list-map-keys'), keys, 'must not contain duplicate entries'));
    seen.add(k);
  }
}

/** validateMapListKeysMapSet: list members must be identifiable, so keys are never missing or null. */
function mapSetKeyRules(s: Record<string, any>, at: string, listType: string, keys: string[], out: Cause[]): void {
  const items = s.items;
  if (!isObject(items) || (listType !== 'set' && listType !== 'map')) return;
  const itemsAt = path.child(at, 'items');
  if (items.nullable === true)
    out.push(cause.forbidden(path.child(itemsAt, 'nullable'), `cannot be nullable when x-kubernetes-list-type is ${listType}`));
  if (listType !== 'map') return;
  const required = new Set(Array.isArray(items.required) ? items.required : []);
  for (const k of keys) {
    const prop = isObject(items.properties) ? items.properties[k] : undefined;
    if (!isObject(prop)) continue;
    const propAt = path.key(path.child(itemsAt, 'properties'), k);
    if (!required.has(k) && !hasDefault(prop))
      out.push(
        cause.required(
          path.child(propAt, 'default'),
          'this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property',
        ),
      );
    if (prop.nullable === true)
      out.push(cause.forbidden(path.child(propAt, 'nullable'), 'this property is in x-kubernetes-list-map-keys, so it cannot be nullable'));
  }
}

function listTypeRules(s: Record<string, any>, at: string, out: Cause[]): void {
  const listType = s['x-kubernetes-list-type'];
  const keys: string[] = Array.isArray(s['x-kubernetes-list-map-keys']) ? s['x-kubernetes-list-map-keys'] : [];
  if (listType !== undefined && s.type !== 'array') typeMustBe(s, at, 'array', 'x-kubernetes-list-type is specified', out);
  else if (listType === 'set') setItemRules(s, at, out);
  if (listType !== undefined && !['atomic', 'set', 'map'].includes(listType))
    out.push(cause.notSupported(path.child(at, 'x-kubernetes-list-type'), listType, ['atomic', 'set', 'map']));
  if (keys.length > 0) {
    const f = path.child(at, 'x-kubernetes-list-type');
    if (listType === undefined) out.push(cause.required(f, 'must be map if x-kubernetes-list-map-keys is non-empty'));
    else if (listType !== 'map') out.push(cause.invalid(f, listType, 'must be map if x-kubernetes-list-map-keys is non-empty'));
  }
  if (listType === 'map') mapListRules(s, at, keys, out);
  mapSetKeyRules(s, at, listType, keys, out);
}

/** CEL rules are not evaluated here, but an empty rule is still a broken CRD. */
function celRules(s: Record<string, any>, at: string, out: Cause[]): void {
  const rules = s['x-kubernetes-validations'];
  if (!Array.isArray(rules)) return;
  rules.forEach((r: any, i: number) => {
    if (!isObject(r) || typeof r.rule !== 'string' || !r.rule.trim())
      out.push(cause.required(path.child(path.index(path.child(at, 'x-kubernetes-validations'), i), 'rule'), 'rule is not specified'));
  });
}

function walk(s: unknown, at: string, ctx: Ctx, isRoot: boolean, out: Cause[]): void {
  if (!isObject(s)) {
    out.push(cause.invalid(at, s, 'must be a JSON schema object'));
    return;
  }
  keywordTypeRules(s, at, out);
  nodeRules(s, at, ctx, out);
  if (s.uniqueItems === true)
    out.push(cause.forbidden(path.child(at, 'uniqueItems'), 'uniqueItems cannot be set to true since the runtime complexity becomes quadratic'));
  // properties are for structs and additionalProperties for maps; both would contradict the
  // convention of ignoring unknown fields.
  const props = isObject(s.properties) && Object.keys(s.properties).length > 0;
  if (props && (s.additionalProperties === false || isObject(s.additionalProperties)))
    out.push(cause.forbidden(path.child(at, 'additionalProperties'), 'additionalProperties and properties are mutual exclusive'));
  children(s, at, ctx, isRoot, out);
  if (s['x-kubernetes-preserve-unknown-fields'] === false)
    out.push(cause.invalid(path.child(at, 'x-kubernetes-preserve-unknown-fields'), false, 'must be true or undefined'));
  mapTypeRules(s, at, out);
  listTypeRules(s, at, out);
  celRules(s, at, out);
}

/** Root-only rules, then the generic rules over the whole schema. */
export function schemaRules(schema: unknown, at: string, statusEnabled: boolean): Cause[] {
  const out: Cause[] = [];
  if (isObject(schema)) {
    if (statusEnabled) out.push(...statusRootRules(schema, at));
    if (schema.nullable === true) out.push(cause.forbidden(path.child(at, 'nullable'), 'nullable cannot be true at the root'));
  }
  walk(schema, at, ROOT_CTX, true, out);
  return out;
}

/**
 * With a status subresource the root may only carry keywords that survive extracting
 * `properties.status` as the status schema (upstream's `allowedFieldsAtRootSchema`).
 */
const ALLOWED_AT_ROOT = new Set([
  'description',
  'type',
  'format',
  'title',
  'maximum',
  'exclusiveMaximum',
  'minimum',
  'exclusiveMinimum',
  'maxLength',
  'minLength',
  'pattern',
  'maxItems',
  'minItems',
  'uniqueItems',
  'multipleOf',
  'required',
  'items',
  'properties',
  'externalDocs',
  'example',
  'x-kubernetes-preserve-unknown-fields',
  'x-kubernetes-validations',
]);

/** Go zero values (false, "", 0, empty) are indistinguishable from "unset" upstream. */
function isZero(v: unknown): boolean {
  if (v === false || v === '' || v === 0 || v === null || v === undefined) return true;
  if (Array.isArray(v)) return v.length === 0;
  return isObject(v) && Object.keys(v).length === 0;
}

function statusRootRules(schema: Record<string, any>, at: string): Cause[] {
  if (schema.type !== undefined && schema.type !== 'object')
    return [
      cause.invalid(
        path.child(at, 'type'),
        schema.type,
        'only "object" is allowed as the type at the root of the schema if the status subresource is enabled',
      ),
    ];
  const extra = Object.keys(schema).find((k) => !ALLOWED_AT_ROOT.has(k) && !isZero(schema[k]));
  if (extra === undefined) return [];
  // Upstream prints the whole schema as the value; the offending keyword is more useful.
  return [
    cause.invalid(
      at,
      extra,
      `only [${[...ALLOWED_AT_ROOT].join(' ')}] fields are allowed at the root of the schema if the status subresource is enabled`,
    ),
  ];
}
