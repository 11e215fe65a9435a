import Ajv, { ErrorObject, ValidateFunction } from 'ajv';
import { Cause, cause, goFloat } from './causes';
import { formatCheck } from './formats';
import { isObject, path } from './util';

/**
 * OpenAPI v3 value validation of custom resources with ajv, reporting causes the way
 * kube-apiserver does (go-openapi messages mapped by apiextensions' `kubeOpenAPIResultToFieldErrors`):
 *
 *   spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10
 *
 * The CRD schema is first converted to a plain JSON schema (draft-07) that ajv runs without
 * vocabularies of its own: `nullable` becomes a `null` type, `x-kubernetes-int-or-string` becomes
 * `["integer","string"]`, boolean `exclusiveMaximum` becomes the numeric form, formats upstream
 * ignores are dropped, and `x-kubernetes-*` keywords and `default` are left out.
 */

/** Validates one JSON value; `fieldPrefix` is the path of that value (empty for an object root). */
export type ValueValidator = (value: unknown, fieldPrefix?: string) => Cause[];

/** Go's RE2 syntax, as far as JS can follow: leading flag groups become flags, `(?P<n>` named groups. */
function goRegExp(pattern: string, flags: string): RegExp {
  let p = pattern.replace(/\(\?P</g, '(?<');
  let f = flags;
  const lead = /^\(\?([imsU]+)\)/.exec(p);
  if (lead) {
    p = p.slice(lead[0].length);
    for (const c of lead[1]) if ('ims'.includes(c) && !f.includes(c)) f += c;
  }
  try {
    return new RegExp(p, f);
  } catch {
    // RE2 allows escaping any punctuation (`\-`, `\_`); unicode-mode JS does not, legacy mode does.
    return new RegExp(p, f.replace('u', ''));
  }
}
goRegExp.code = 'goRegExp'; // only used by ajv's standalone code generation, which we never run

export function newAjv(): Ajv {
  return new Ajv({
    allErrors: true,
    strict: false,
    validateSchema: false,
    messages: false, // messages are upstream's, built in toCause
    verbose: true, // puts parentSchema on errors, needed to tell our nullable-enum null apart
    // ajv's code optimiser costs more than it saves on large CRD schemas (about 2x compile time).
    code: { regExp: goRegExp, optimize: false },
  });
}

/** Why `pattern` does not compile the way ajv will compile it, or undefined when it does. */
export function patternError(pattern: string): string | undefined {
  try {
    goRegExp(pattern, 'u');
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Types a schema node admits, before nullable. */
function schemaTypes(s: Record<string, any>): string[] {
  if (s['x-kubernetes-int-or-string'] === true) return ['integer', 'string'];
  return typeof s.type === 'string' && s.type ? [s.type] : [];
}

const COPIED = [
  'maxLength',
  'minLength',
  'pattern',
  'maxItems',
  'minItems',
  'uniqueItems',
  'maxProperties',
  'minProperties',
  'multipleOf',
  'required',
] as const;

/** Converted nodes whose enum got a `null` added for `nullable`, so messages can leave it out. */
const nullableEnums = new WeakSet<object>();

function convertBounds(s: Record<string, any>, out: Record<string, any>): void {
  // OpenAPI 3.0 has boolean exclusiveMaximum/Minimum modifying maximum/minimum; draft-07 has numbers.
  if (typeof s.maximum === 'number') {
    if (s.exclusiveMaximum === true) out.exclusiveMaximum = s.maximum;
    else out.maximum = s.maximum;
  }
  if (typeof s.minimum === 'number') {
    if (s.exclusiveMinimum === true) out.exclusiveMinimum = s.minimum;
    else out.minimum = s.minimum;
  }
}

function convertFormat(s: Record<string, any>, types: string[], out: Record<string, any>, ajv: Ajv): void {
  if (typeof s.format !== 'string' || !(types.length === 0 || (types.length === 1 && types[0] === 'string'))) return;
  const check = formatCheck(s.format);
  if (!check) return;
  // Registered under the name as written so ajv's error carries it for the message.
  if (!ajv.formats[s.format]) ajv.addFormat(s.format, { type: 'string', validate: check });
  out.format = s.format;
}

/** The draft-07 schema ajv runs for a CRD schema node (see the file comment for the mapping). */
export function toAjvSchema(s: unknown, ajv: Ajv): Record<string, any> {
  if (!isObject(s)) return {};
  const out: Record<string, any> = {};
  const types = schemaTypes(s);
  const nullable = s.nullable === true;
  if (types.length) out.type = nullable ? [...types, 'null'] : types.length === 1 ? types[0] : types;
  for (const k of COPIED) if (s[k] !== undefined) out[k] = s[k];
  convertBounds(s, out);
  convertFormat(s, types, out, ajv);
  if (Array.isArray(s.enum)) {
    out.enum = s.enum;
    if (nullable && !s.enum.includes(null)) {
      out.enum = [...s.enum, null];
      nullableEnums.add(out);
    }
  }
  if (isObject(s.properties)) {
    out.properties = {};
    for (const [k, v] of Object.entries(s.properties)) out.properties[k] = toAjvSchema(v, ajv);
  }
  if (isObject(s.additionalProperties)) out.additionalProperties = toAjvSchema(s.additionalProperties, ajv);
  else if (s.additionalProperties === false) out.additionalProperties = false;
  if (isObject(s.items)) out.items = toAjvSchema(s.items, ajv);
  for (const k of ['allOf', 'anyOf', 'oneOf'] as const)
    if (Array.isArray(s[k])) out[k] = s[k].map((x: unknown) => toAjvSchema(x, ajv));
  if (isObject(s.not)) out.not = toAjvSchema(s.not, ajv);
  return out;
}

function jsonType(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v; // string, boolean, object
}

/**
 * Walks ajv's JSON-pointer instancePath over the data, building `spec.items[0].name`. In batch
 * mode the data is a list of unrelated values and the first segment picks the value's own prefix.
 */
function locate(data: unknown, instancePath: string, prefix: string, batch?: string[]): { field: string; value: unknown } {
  const segs = instancePath.split('/').slice(1).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  let field = prefix;
  let cur: any = data;
  if (batch) {
    const i = Number(segs.shift());
    field = batch[i];
    cur = (data as unknown[])[i];
  }
  for (const seg of segs) {
    field = Array.isArray(cur) ? path.index(field, Number(seg)) : path.child(field, seg);
    cur = cur == null ? undefined : cur[seg];
  }
  return { field, value: cur };
}

/**
 * Errors from inside anyOf/oneOf/not branches: go-openapi reports the junctor failure rather than
 * every branch's complaint, so these are dropped. Segments after `properties` are field names.
 */
function insideJunctorBranch(schemaPath: string): boolean {
  const segs = schemaPath.split('/');
  for (let i = 1; i < segs.length; i++) {
    const s = segs[i];
    if (s === 'properties') {
      i++;
      continue;
    }
    if ((s === 'anyOf' || s === 'oneOf') && i + 2 < segs.length) return true;
    if (s === 'not' && i + 1 < segs.length) return true;
  }
  return false;
}

const COMPARISON: Record<string, string> = {
  '<=': 'less than or equal to',
  '<': 'less than',
  '>=': 'greater than or equal to',
  '>': 'greater than',
};

/** go-openapi compares integers natively (printing an int64 limit) and anything else as float64. */
function limitText(limit: number, value: unknown): string {
  return typeof value === 'number' && Number.isInteger(value) ? String(Math.trunc(limit)) : goFloat(limit);
}

function enumValues(e: ErrorObject): string[] {
  let values: unknown[] = e.params.allowedValues ?? [];
  if (e.parentSchema && nullableEnums.has(e.parentSchema)) values = values.slice(0, -1);
  return values.map((v) => (typeof v === 'string' ? v : JSON.stringify(v)));
}

function toCause(e: ErrorObject, data: unknown, prefix: string, batch?: string[]): Cause {
  const { field, value } = locate(data, e.instancePath, prefix, batch);
  const inBody = `${field} in body`.trim();
  const p = e.params as Record<string, any>;
  switch (e.keyword) {
    case 'type': {
      const want = ([] as string[]).concat(p.type).filter((t) => t !== 'null');
      const got = jsonType(value);
      return cause.typeInvalid(field, got, `${inBody} must be of type ${want.join(',')}: ${JSON.stringify(got)}`);
    }
    case 'required':
      return cause.required(path.child(field, p.missingProperty));
    case 'enum':
      return cause.notSupported(field, value, enumValues(e));
    case 'maximum':
    case 'minimum':
    case 'exclusiveMaximum':
    case 'exclusiveMinimum':
      return cause.invalid(field, value, `${inBody} should be ${COMPARISON[p.comparison]} ${limitText(p.limit, value)}`);
    case 'multipleOf':
      return cause.invalid(field, value, `${inBody} should be a multiple of ${limitText(p.multipleOf, value)}`);
    case 'maxLength':
      return cause.tooLong(field, p.limit);
    case 'minLength':
      return cause.invalid(field, value, `${inBody} should be at least ${p.limit} chars long`);
    case 'pattern':
      return cause.invalid(field, value, `${inBody} should match '${p.pattern}'`);
    case 'maxItems':
    case 'minItems':
      return cause.invalid(
        field,
        (value as unknown[]).length,
        `${inBody} should have ${e.keyword === 'maxItems' ? 'at most' : 'at least'} ${p.limit} items`,
      );
    case 'maxProperties':
    case 'minProperties':
      return cause.invalid(
        field,
        Object.keys(value as object).length,
        `${inBody} should have ${e.keyword === 'maxProperties' ? 'at most' : 'at least'} ${p.limit} properties`,
      );
    case 'uniqueItems':
      return cause.invalid(field, '', `${inBody} shouldn't contain duplicates`);
    case 'format':
      return cause.typeInvalid(field, value, `${inBody} must be of type ${p.format}: ${JSON.stringify(value)}`);
    case 'additionalProperties':
      return cause.invalid(field, p.additionalProperty, `${path.child(field, p.additionalProperty)} in body is a forbidden property`);
    case 'anyOf':
      return cause.invalid(field, '', `${JSON.stringify(field)} must validate at least one schema (anyOf)`);
    case 'oneOf': {
      const passing = Array.isArray(p.passingSchemas) ? p.passingSchemas.length : 0;
      const found = passing ? `Found ${passing} valid alternatives` : 'Found none valid';
      return cause.invalid(field, '', `${JSON.stringify(field)} must validate one and only one schema (oneOf). ${found}`);
    }
    case 'not':
      return cause.invalid(field, '', `${JSON.stringify(field)} must not validate the schema (not)`);
    default:
      return cause.invalid(field, value, `${inBody} failed ${e.keyword} validation`);
  }
}

function causesOf(validate: ValidateFunction, data: unknown, prefix: string, batch?: string[]): Cause[] {
  if (validate(data)) return [];
  return (validate.errors ?? []).filter((e) => !insideJunctorBranch(e.schemaPath)).map((e) => toCause(e, data, prefix, batch));
}

/** Compiles `schema` (an OpenAPI v3 CRD schema node) once; throws if ajv cannot compile it. */
export function buildValidator(schema: unknown, ajv: Ajv = newAjv()): ValueValidator {
  const validate = ajv.compile(toAjvSchema(schema, ajv));
  return (value, fieldPrefix = '') => causesOf(validate, value, fieldPrefix);
}

/**
 * Validates `values[i]` against `schemas[i]` with a single compilation, reporting fields under
 * `prefixes[i]`. Compiling is the expensive part, and a CRD can have hundreds of defaults.
 */
export function validateBatch(schemas: unknown[], values: unknown[], prefixes: string[], ajv: Ajv = newAjv()): Cause[] {
  if (!schemas.length) return [];
  // A draft-07 tuple: position i of the array is checked against schema i.
  const validate = ajv.compile({ type: 'array', items: schemas.map((s) => toAjvSchema(s, ajv)) });
  return causesOf(validate, values, '', prefixes);
}
