import { Cause, cause } from './causes';
import { defaultValue } from './defaulting';
import { dns1035Label, dns1123Subdomain, dns1123SubdomainPrefix } from './names';
import { versionSchema } from './openapi';
import { pruneResource } from './pruning';
import { buildValidator, ValueValidator } from './schema-validator';
import { clone, isObject, Lru, path } from './util';

/**
 * Per-version request processing for custom resources: prune, default, validate. Compiling a
 * version builds an ajv validator (hundreds of milliseconds for a large schema), so it is cached.
 */

export interface CompiledVersion {
  /** Drops non-nullable nulls and applies `default`s; returns a new object. */
  applyDefaults(obj: any): any;
  /** Removes unknown fields; returns a new object and the dropped fields' paths (`spec.foo`). */
  prune(obj: any): { object: any; unknownFields: string[] };
  /** Schema validation plus metadata.name and embedded-resource checks; [] when valid. */
  validate(obj: any): Cause[];
  /** The version's openAPIV3Schema (list/map semantics for server-side apply). */
  schema: any;
}

/** metadata.name (or generateName) must be a DNS-1123 subdomain, like every CR upstream. */
function metadataCauses(obj: any): Cause[] {
  const meta = isObject(obj) ? obj.metadata : undefined;
  if (meta !== undefined && !isObject(meta)) return [cause.invalid('metadata', meta, 'must be an object')];
  const name = meta?.name;
  const generateName = meta?.generateName;
  if (typeof name === 'string' && name) return dns1123Subdomain(name).map((m) => cause.invalid('metadata.name', name, m));
  if (typeof generateName === 'string' && generateName)
    return dns1123SubdomainPrefix(generateName).map((m) => cause.invalid('metadata.generateName', generateName, m));
  return [cause.required('metadata.name', 'name or generateName is required')];
}

/** apiVersion must parse as "v1" or "group/v1" (schema.ParseGroupVersion); kind is a mixed-case DNS-1035 label. */
function typeMetaError(key: string, value: string): string | undefined {
  if (key === 'apiVersion') return value.split('/').length > 2 ? `unexpected GroupVersion string: ${value}` : undefined;
  const errs = dns1035Label(value.toLowerCase());
  return errs.length ? `may have mixed case, but should otherwise match: ${errs.join(',')}` : undefined;
}

/** An x-kubernetes-embedded-resource value needs apiVersion and kind (objectmeta/validation.go). */
function embeddedResourceCauses(x: Record<string, any>, at: string, out: Cause[]): void {
  for (const k of ['apiVersion', 'kind']) {
    const f = path.child(at, k);
    const v = x[k];
    if (v === undefined || v === '') out.push(cause.required(f));
    else if (typeof v !== 'string') out.push(cause.invalid(f, v, 'must be a string'));
    else {
      const err = typeMetaError(k, v);
      if (err) out.push(cause.invalid(f, v, err));
    }
  }
  if (x.metadata !== undefined && !isObject(x.metadata)) out.push(cause.invalid(path.child(at, 'metadata'), x.metadata, 'must be an object'));
}

function walkEmbedded(x: unknown, s: unknown, at: string, out: Cause[]): void {
  if (!isObject(s)) return;
  if (Array.isArray(x)) {
    x.forEach((v, i) => walkEmbedded(v, s.items, path.index(at, i), out));
    return;
  }
  if (!isObject(x)) return;
  if (s['x-kubernetes-embedded-resource'] === true) embeddedResourceCauses(x, at, out);
  for (const [k, v] of Object.entries(x)) {
    const prop = isObject(s.properties) ? s.properties[k] : undefined;
    if (isObject(prop)) walkEmbedded(v, prop, path.child(at, k), out);
    else if (isObject(s.additionalProperties)) walkEmbedded(v, s.additionalProperties, path.key(at, k), out);
  }
}

interface Built {
  compiled: CompiledVersion;
  /** Why ajv could not compile the schema, if it could not. */
  error?: string;
}

function build(schema: Record<string, any>): Built {
  let validateValue: ValueValidator;
  let error: string | undefined;
  try {
    validateValue = buildValidator(schema);
  } catch (e) {
    // Only a CRD stored without our validation gets here; refuse writes rather than fail with 500s.
    const msg = `error building validator: ${(e as Error).message}`;
    error = msg;
    validateValue = () => [cause.invalid('', '', msg)];
  }
  const compiled: CompiledVersion = {
    schema,
    applyDefaults(obj) {
      const out = clone(obj);
      defaultValue(out, schema);
      return out;
    },
    prune(obj) {
      const object = clone(obj);
      return { object, unknownFields: pruneResource(object, schema) };
    },
    validate(obj) {
      const out = metadataCauses(obj);
      walkEmbedded(obj, schema, '', out);
      return [...out, ...validateValue(obj)];
    },
  };
  return { compiled, error };
}

/**
 * Two caches: by CRD uid + resourceVersion + version, which is cheap to look up on every request,
 * and by schema content, so a new resourceVersion with the same schema (a status update, or the
 * CRD being stored after validateCrd compiled it) reuses the compilation.
 */
const byResource = new Lru<string, CompiledVersion>(256);
const bySchema = new Lru<string, Built>(64);

/** The compilation of one openAPIV3Schema, shared by everything with the same content. */
export function compileSchema(schema: Record<string, any>): Built {
  const key = JSON.stringify(schema);
  let built = bySchema.get(key);
  if (!built) {
    // A private copy: the cache must not change if the caller later mutates its CRD object.
    built = build(clone(schema));
    bySchema.set(key, built);
  }
  return built;
}

/** Prune/default/validate for one version of `crd`; throws if the CRD has no such version. */
export function compileVersion(crd: any, version: string): CompiledVersion {
  const uid = crd?.metadata?.uid;
  const rv = crd?.metadata?.resourceVersion;
  if (!uid || !rv) return compileSchema(versionSchema(crd, version)).compiled; // not stored yet
  const key = `${uid}/${rv}/${version}`;
  let compiled = byResource.get(key);
  if (!compiled) {
    compiled = compileSchema(versionSchema(crd, version)).compiled;
    // Older resourceVersions of this CRD are never asked for again.
    byResource.deleteWhere((k) => k.startsWith(`${uid}/`) && !k.startsWith(`${uid}/${rv}/`));
    byResource.set(key, compiled);
  }
  return compiled;
}
