import { isObject, path } from './util';

/**
 * Pruning of unknown fields, after apiextensions' `pruning/algorithm.go` and `objectmeta/coerce.go`.
 *
 * - A field not in `properties` is dropped unless the node has `additionalProperties` (any value,
 *   even `false`: validation then rejects it) or `x-kubernetes-preserve-unknown-fields`.
 * - Under preserve-unknown-fields, unknown fields stay but listed properties are pruned again.
 * - At the resource root and in `x-kubernetes-embedded-resource` objects, apiVersion and kind are
 *   kept as they are and metadata is cut down to ObjectMeta's fields (upstream decodes it into
 *   ObjectMeta, which drops everything else).
 *
 * Every dropped field is reported by path (`spec.foo`, `spec.items[0].bar`) for fieldValidation.
 */

const META_FIELDS = new Set(['apiVersion', 'kind', 'metadata']);

const OBJECT_META_FIELDS = new Set([
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
]);
const OWNER_REFERENCE_FIELDS = new Set(['apiVersion', 'kind', 'name', 'uid', 'controller', 'blockOwnerDeletion']);
const MANAGED_FIELDS_ENTRY_FIELDS = new Set([
  'manager',
  'operation',
  'apiVersion',
  'time',
  'fieldsType',
  'fieldsV1',
  'subresource',
]);

function keepOnly(x: Record<string, any>, allowed: Set<string>, at: string, unknown: string[]): void {
  for (const k of Object.keys(x)) {
    if (allowed.has(k)) continue;
    unknown.push(path.child(at, k));
    delete x[k];
  }
}

function pruneEntries(list: unknown, allowed: Set<string>, at: string, unknown: string[]): void {
  if (!Array.isArray(list)) return;
  list.forEach((item, i) => {
    if (isObject(item)) keepOnly(item, allowed, path.index(at, i), unknown);
  });
}

/** Drops what ObjectMeta (and its owner references and managed-field entries) cannot hold. */
function coerceObjectMeta(meta: unknown, at: string, unknown: string[]): void {
  if (!isObject(meta)) return; // not an object: left for validation to reject
  keepOnly(meta, OBJECT_META_FIELDS, at, unknown);
  pruneEntries(meta.ownerReferences, OWNER_REFERENCE_FIELDS, path.child(at, 'ownerReferences'), unknown);
  pruneEntries(meta.managedFields, MANAGED_FIELDS_ENTRY_FIELDS, path.child(at, 'managedFields'), unknown);
}

/** The schema for values of a map, or null for `additionalProperties: true|false` (no schema). */
function additionalSchema(s: Record<string, any>): Record<string, any> | null {
  return isObject(s.additionalProperties) ? s.additionalProperties : null;
}

interface Walk {
  unknown: string[];
}

/** Handles a key of an embedded resource's type or object meta; returns true when it did. */
function handledAsMeta(x: Record<string, any>, k: string, embedded: boolean, at: string, w: Walk): boolean {
  if (!embedded || !META_FIELDS.has(k)) return false;
  if (k === 'metadata') coerceObjectMeta(x.metadata, path.child(at, 'metadata'), w.unknown);
  return true;
}

function prune(x: unknown, s: Record<string, any> | null, at: string, w: Walk, isResourceRoot = false): void {
  const embedded = isResourceRoot || s?.['x-kubernetes-embedded-resource'] === true;
  if (s && s['x-kubernetes-preserve-unknown-fields'] === true) return skipPrune(x, s, at, w, embedded);
  if (Array.isArray(x)) {
    x.forEach((v, i) => prune(v, s && isObject(s.items) ? s.items : null, path.index(at, i), w));
    return;
  }
  if (!isObject(x)) return;
  for (const k of Object.keys(x)) {
    if (handledAsMeta(x, k, embedded, at, w)) continue;
    const prop = s && isObject(s.properties) ? s.properties[k] : undefined;
    if (isObject(prop)) prune(x[k], prop, path.child(at, k), w);
    else if (s && s.additionalProperties !== undefined) prune(x[k], additionalSchema(s), path.child(at, k), w);
    else {
      w.unknown.push(path.child(at, k));
      delete x[k];
    }
  }
}

/** Under x-kubernetes-preserve-unknown-fields: keep unknown fields, prune below known ones. */
function skipPrune(x: unknown, s: Record<string, any>, at: string, w: Walk, embedded: boolean): void {
  if (Array.isArray(x)) {
    // Upstream keeps preserving into array items even when `items` does not say so.
    if (isObject(s.items)) x.forEach((v, i) => skipPrune(v, s.items, path.index(at, i), w, s.items['x-kubernetes-embedded-resource'] === true));
    return;
  }
  if (!isObject(x)) return;
  for (const k of Object.keys(x)) {
    if (handledAsMeta(x, k, embedded, at, w)) continue;
    const prop = isObject(s.properties) ? s.properties[k] : undefined;
    if (isObject(prop)) prune(x[k], prop, path.child(at, k), w);
    else if (s.additionalProperties !== undefined) prune(x[k], additionalSchema(s), path.child(at, k), w);
  }
}

/** Prunes `obj` (a whole custom resource) in place; returns the paths of dropped fields. */
export function pruneResource(obj: unknown, schema: Record<string, any>): string[] {
  const w: Walk = { unknown: [] };
  prune(obj, schema, '', w, true);
  return w.unknown;
}

/** Prunes a value of the given schema node in place (used to check that defaults are pruned). */
export function pruneValue(value: unknown, schema: Record<string, any>): string[] {
  const w: Walk = { unknown: [] };
  prune(value, schema, '', w, schema['x-kubernetes-embedded-resource'] === true);
  return w.unknown;
}
