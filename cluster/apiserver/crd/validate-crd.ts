import { Cause, cause } from './causes';
import { compileSchema } from './compile';
import { dns1035Label, dns1123Subdomain } from './names';
import { defaultRules } from './schema-defaults';
import { schemaRules } from './schema-rules';
import { structuralRules } from './structural';
import { clone, isObject, Lru, path } from './util';

/**
 * Validation and defaulting of apiextensions.k8s.io/v1 CustomResourceDefinitions, after
 * apiextensions' `validation.go` and `v1/defaults.go`. Field paths and messages follow upstream.
 * Checks that need other CRDs (plural or kind clashes within a group) are the caller's job.
 */

const PRINTER_COLUMN_TYPES = ['boolean', 'date', 'integer', 'number', 'string'];
const PRINTER_COLUMN_FORMATS = ['byte', 'date', 'date-time', 'double', 'float', 'int32', 'int64', 'password'];

const str = (v: unknown): string => (typeof v === 'string' ? v : '');

/** Applies upstream's CRD defaults to a copy: singular, listKind, conversion, storedVersions. */
export function defaultCrd(crd: any): any {
  const out = clone(crd);
  if (!isObject(out) || !isObject(out.spec)) return out;
  const spec = out.spec;
  if (isObject(spec.names) && str(spec.names.kind)) {
    if (!str(spec.names.singular)) spec.names.singular = spec.names.kind.toLowerCase();
    if (!str(spec.names.listKind)) spec.names.listKind = `${spec.names.kind}List`;
  }
  if (spec.conversion === undefined || spec.conversion === null) spec.conversion = { strategy: 'None' };
  defaultStoredVersions(out);
  return out;
}

/**
 * The storage version is always recorded in status.storedVersions (upstream does this on create
 * and in PrepareForUpdate), so a later storage-version switch keeps the old one listed.
 */
function defaultStoredVersions(crd: Record<string, any>): void {
  const storage = Array.isArray(crd.spec.versions) ? crd.spec.versions.find((v: any) => isObject(v) && v.storage === true) : undefined;
  if (!storage || !str(storage.name)) return;
  if (!isObject(crd.status)) crd.status = {};
  const stored: unknown[] = Array.isArray(crd.status.storedVersions) ? crd.status.storedVersions : [];
  if (!stored.includes(storage.name)) crd.status.storedVersions = [...stored, storage.name];
}

function metadataRules(crd: Record<string, any>, out: Cause[]): void {
  const name = isObject(crd.metadata) ? crd.metadata.name : undefined;
  if (typeof name !== 'string' || !name) {
    out.push(cause.required('metadata.name', 'name or generateName is required'));
    return;
  }
  const spec = isObject(crd.spec) ? crd.spec : {};
  const names = isObject(spec.names) ? spec.names : {};
  const msgs = [...dns1123Subdomain(name)];
  if (name !== `${str(names.plural)}.${str(spec.group)}`) msgs.push('must be spec.names.plural+"."+spec.group');
  for (const m of msgs) out.push(cause.invalid('metadata.name', name, m));
}

function groupRules(group: unknown, out: Cause[]): void {
  const at = 'spec.group';
  if (!str(group)) out.push(cause.required(at));
  else if (dns1123Subdomain(str(group)).length) out.push(cause.invalid(at, group, dns1123Subdomain(str(group)).join(',')));
  else if (!str(group).includes('.')) out.push(cause.invalid(at, group, 'should be a domain with at least one dot'));
}

function enumRule(value: unknown, at: string, accepted: string[], out: Cause[]): void {
  if (value === undefined || value === null || value === '') out.push(cause.required(at));
  else if (!accepted.includes(value as string)) out.push(cause.notSupported(at, value, accepted));
}

/** ValidateCustomResourceDefinitionNames: DNS-1035 labels; kinds may be mixed case. */
function namesRules(names: Record<string, any>, at: string, out: Cause[]): void {
  for (const k of ['plural', 'singular'])
    if (str(names[k]) && dns1035Label(names[k]).length) out.push(cause.invalid(path.child(at, k), names[k], dns1035Label(names[k]).join(',')));
  for (const k of ['kind', 'listKind']) {
    const errs = str(names[k]) ? dns1035Label(names[k].toLowerCase()) : [];
    if (errs.length) out.push(cause.invalid(path.child(at, k), names[k], `may have mixed case, but should otherwise match: ${errs.join(',')}`));
  }
  for (const k of ['shortNames', 'categories']) {
    if (!Array.isArray(names[k])) continue;
    names[k].forEach((v: unknown, i: number) => {
      const errs = dns1035Label(str(v));
      if (errs.length) out.push(cause.invalid(path.index(path.child(at, k), i), v, errs.join(',')));
    });
  }
  // kind and listKind may not be the same or parsing becomes ambiguous
  if (str(names.kind) && names.kind === names.listKind)
    out.push(cause.invalid(path.child(at, 'listKind'), names.listKind, 'kind and listKind may not be the same'));
}

function specNamesRules(names: Record<string, any>, out: Cause[]): void {
  for (const k of ['plural', 'singular', 'kind', 'listKind']) if (!str(names[k])) out.push(cause.required(`spec.names.${k}`));
  namesRules(names, 'spec.names', out);
}

/** validateSimpleJSONPath: a dot-notation path starting with '.'. */
function simpleJsonPath(value: unknown, at: string, out: Cause[]): boolean {
  const s = str(value);
  if (!s) out.push(cause.invalid(at, value ?? '', 'must not be empty'));
  else if (!s.startsWith('.')) out.push(cause.invalid(at, value, 'must be a simple json path starting with .'));
  else return true;
  return false;
}

function scaleRules(scale: Record<string, any>, at: string, out: Cause[]): void {
  const paths: [key: string, prefixes: string[], detail: string, required: boolean][] = [
    ['specReplicasPath', ['.spec.'], 'should be a json path under .spec', true],
    ['statusReplicasPath', ['.status.'], 'should be a json path under .status', true],
    ['labelSelectorPath', ['.spec.', '.status.'], 'should be a json path under either .spec or .status', false],
  ];
  for (const [key, prefixes, detail, required] of paths) {
    const f = path.child(at, key);
    if (!str(scale[key])) {
      if (required) out.push(cause.required(f));
      continue;
    }
    if (simpleJsonPath(scale[key], f, out) && !prefixes.some((p) => scale[key].startsWith(p))) out.push(cause.invalid(f, scale[key], detail));
  }
}

function subresourceRules(sub: unknown, at: string, out: Cause[]): void {
  if (!isObject(sub)) return;
  if (sub.status !== undefined && sub.status !== null && !isObject(sub.status))
    out.push(cause.invalid(path.child(at, 'status'), sub.status, 'must be an object'));
  if (isObject(sub.scale)) scaleRules(sub.scale, path.child(at, 'scale'), out);
}

function printerColumnRules(col: unknown, at: string, out: Cause[]): void {
  if (!isObject(col)) return;
  if (!str(col.name)) out.push(cause.required(path.child(at, 'name')));
  const typeDetail = `must be one of ${PRINTER_COLUMN_TYPES.join(',')}`;
  if (!str(col.type)) out.push(cause.required(path.child(at, 'type'), typeDetail));
  else if (!PRINTER_COLUMN_TYPES.includes(col.type)) out.push(cause.invalid(path.child(at, 'type'), col.type, typeDetail));
  if (str(col.format) && !PRINTER_COLUMN_FORMATS.includes(col.format))
    out.push(cause.invalid(path.child(at, 'format'), col.format, `must be one of ${PRINTER_COLUMN_FORMATS.join(',')}`));
  // Upstream names this field after the Go struct field, hence "JSONPath".
  if (!str(col.jsonPath)) out.push(cause.required(path.child(at, 'JSONPath')));
  else simpleJsonPath(col.jsonPath, path.child(at, 'JSONPath'), out);
}

function deprecationRules(v: Record<string, any>, at: string, out: Cause[]): void {
  const w = v.deprecationWarning;
  if (w === undefined || w === null) return;
  const f = path.child(at, 'deprecationWarning');
  if (v.deprecated !== true) out.push(cause.invalid(f, w, 'can only be set for deprecated versions'));
  else if (str(w).length > 256) out.push(cause.invalid(f, w, 'must be <= 256 characters long'));
  else if (str(w).length === 0) out.push(cause.invalid(f, w, 'must not be an empty string'));
}

/**
 * openAPIV3Schema of one version: generic rules, then structural rules, then (only for a clean
 * schema, as the next steps compile it) defaults, then whether a validator can be built at all.
 */
function schemaCauses(schema: unknown, schemaAt: string, statusEnabled: boolean): Cause[] {
  const rootAt = path.child(schemaAt, 'openAPIV3Schema');
  const errs = [...schemaRules(schema, rootAt, statusEnabled), ...structuralRules(schema, rootAt)];
  if (!errs.length) errs.push(...defaultRules(schema, rootAt));
  if (!errs.length) {
    // Compiled through the shared cache, so serving this version later costs nothing more.
    const { error } = compileSchema(schema as Record<string, any>);
    if (error) errs.push(cause.invalid(schemaAt, '', error));
  }
  return errs;
}

/**
 * Schema checks depend only on the schema, so the controller's status updates and re-applies of
 * an unchanged CRD reuse them; for a large schema they cost tens of milliseconds.
 */
const schemaCausesCache = new Lru<string, Cause[]>(64);

function versionSchemaRules(v: Record<string, any>, at: string, out: Cause[]): void {
  const schemaAt = path.child(at, 'schema');
  const schema = isObject(v.schema) ? v.schema.openAPIV3Schema : undefined;
  if (schema === undefined || schema === null) {
    out.push(cause.required(path.child(schemaAt, 'openAPIV3Schema'), 'schemas are required'));
    return;
  }
  const statusEnabled = isObject(v.subresources) && isObject(v.subresources.status);
  const key = `${schemaAt}|${statusEnabled}|${JSON.stringify(schema)}`;
  let causes = schemaCausesCache.get(key);
  if (!causes) {
    causes = schemaCauses(schema, schemaAt, statusEnabled);
    schemaCausesCache.set(key, causes);
  }
  out.push(...causes);
}

function versionRules(v: unknown, i: number, out: Cause[]): void {
  const at = path.index('spec.versions', i);
  if (!isObject(v)) {
    out.push(cause.invalid(at, v, 'must be an object'));
    return;
  }
  const nameErrs = dns1035Label(str(v.name));
  if (nameErrs.length) out.push(cause.invalid(path.child(at, 'name'), v.name ?? '', nameErrs.join(',')));
  deprecationRules(v, at, out);
  versionSchemaRules(v, at, out);
  subresourceRules(v.subresources, path.child(at, 'subresources'), out);
  if (Array.isArray(v.additionalPrinterColumns))
    v.additionalPrinterColumns.forEach((c: unknown, j: number) =>
      printerColumnRules(c, path.index(path.child(at, 'additionalPrinterColumns'), j), out),
    );
}

function versionsRules(versions: unknown, out: Cause[]): void {
  if (!Array.isArray(versions) || versions.length === 0) {
    out.push(cause.required('spec.versions'));
    return;
  }
  versions.forEach((v, i) => versionRules(v, i, out));
  const names = versions.map((v) => (isObject(v) ? v.name : undefined));
  if (new Set(names).size !== names.length) out.push(cause.invalid('spec.versions', names, 'must contain unique version names'));
  const storage = versions.filter((v) => isObject(v) && v.storage === true).length;
  if (storage !== 1) out.push(cause.invalid('spec.versions', names, 'must have exactly one version marked as storage version'));
}

function conversionRules(conv: unknown, out: Cause[]): void {
  if (!isObject(conv)) return;
  const at = 'spec.conversion';
  enumRule(conv.strategy, path.child(at, 'strategy'), ['None', 'Webhook'], out);
  if (conv.strategy === 'Webhook') {
    const cc = conv.webhook?.clientConfig;
    if (!isObject(cc)) out.push(cause.required(path.child(at, 'webhook'), 'required when strategy is set to Webhook'));
    else if ((cc.url === undefined) === (cc.service === undefined))
      out.push(cause.required(path.child(path.child(at, 'webhook'), 'clientConfig'), 'exactly one of url or service is required'));
    const reviews = conv.webhook?.conversionReviewVersions;
    if (!Array.isArray(reviews) || reviews.length === 0)
      out.push(cause.required(path.child(path.child(at, 'webhook'), 'conversionReviewVersions')));
  } else if (conv.webhook !== undefined && conv.webhook !== null) {
    out.push(cause.forbidden(path.child(at, 'webhook'), 'should not be set when strategy is not set to Webhook'));
  }
}

function storedVersionRules(crd: Record<string, any>, out: Cause[]): void {
  const stored = isObject(crd.status) ? crd.status.storedVersions : undefined;
  if (!Array.isArray(stored)) return; // defaultCrd fills it; nothing to compare before that
  const at = 'status.storedVersions';
  const versions: any[] = Array.isArray(crd.spec?.versions) ? crd.spec.versions.filter(isObject) : [];
  if (stored.length === 0) out.push(cause.invalid(at, stored, 'must have at least one stored version'));
  for (const v of versions) if (v.storage === true && !stored.includes(v.name)) out.push(cause.invalid(at, v.name, `must have the storage version ${v.name}`));
  stored.forEach((s, i) => {
    if (!versions.some((v) => v.name === s)) out.push(cause.invalid(path.index(at, i), s, 'must appear in spec.versions'));
  });
}

/**
 * Causes for a CustomResourceDefinition about to be stored, empty when valid. Call defaultCrd
 * first: singular and listKind are required here, as upstream defaults them before validating.
 */
export function validateCrd(crd: any): Cause[] {
  if (!isObject(crd)) return [cause.invalid('', crd, 'must be an object')];
  const out: Cause[] = [];
  metadataRules(crd, out);
  const spec = isObject(crd.spec) ? crd.spec : {};
  groupRules(spec.group, out);
  enumRule(spec.scope, 'spec.scope', ['Cluster', 'Namespaced'], out);
  if (spec.preserveUnknownFields === true)
    out.push(
      cause.invalid('spec.preserveUnknownFields', true, 'cannot set to true, set x-preserve-unknown-fields to true in spec.versions[*].schema instead'),
    );
  versionsRules(spec.versions, out);
  specNamesRules(isObject(spec.names) ? spec.names : {}, out);
  conversionRules(spec.conversion, out);
  if (isObject(crd.status) && isObject(crd.status.acceptedNames)) namesRules(crd.status.acceptedNames, 'status.acceptedNames', out);
  storedVersionRules(crd, out);
  return out;
}
