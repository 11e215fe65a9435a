import { Cause, cause } from './causes';
import { pruneValue } from './pruning';
import { validateBatch } from './schema-validator';
import { clone, deepEqual, hasDefault, isObject, path } from './util';

/**
 * Every `default` in a CRD schema must survive pruning unchanged and validate against its own
 * node (apiextensions `defaulting/validation.go`); otherwise defaulting would store objects the
 * schema rejects. Only run on schemas that are already structural.
 */

const META_FIELDS = new Set(['apiVersion', 'kind', 'metadata']);

interface Found {
  schema: Record<string, any>;
  /** `<node path>.default` */
  at: string;
  insideMeta: boolean;
}

/** Collects schema nodes that carry a default, noting which ones describe TypeMeta/ObjectMeta. */
function collect(s: unknown, at: string, insideMeta: boolean, isResourceRoot: boolean, out: Found[]): void {
  if (!isObject(s)) return;
  const embedded = isResourceRoot || s['x-kubernetes-embedded-resource'] === true;
  // An embedded resource starts a new resource: only its own apiVersion/kind/metadata are "meta".
  if (s['x-kubernetes-embedded-resource'] === true) insideMeta = false;
  if (hasDefault(s)) out.push({ schema: s, at: path.child(at, 'default'), insideMeta });
  if (isObject(s.items)) collect(s.items, path.child(at, 'items'), insideMeta, false, out);
  if (isObject(s.properties)) {
    for (const [k, v] of Object.entries(s.properties))
      collect(v, path.key(path.child(at, 'properties'), k), insideMeta || (embedded && META_FIELDS.has(k)), false, out);
  }
  if (isObject(s.additionalProperties)) collect(s.additionalProperties, path.child(at, 'additionalProperties'), insideMeta, false, out);
}

/** Under TypeMeta/ObjectMeta pruning is ObjectMeta coercion, not the schema's, so that is skipped. */
function unpruned(f: Found): Cause | undefined {
  if (f.insideMeta) return undefined;
  const pruned = clone(f.schema.default);
  pruneValue(pruned, f.schema);
  return deepEqual(pruned, f.schema.default) ? undefined : cause.invalid(f.at, f.schema.default, 'must not have unknown fields');
}

/** Causes for defaults in the openAPIV3Schema at `at` that are unpruned or invalid. */
export function defaultRules(schema: unknown, at: string): Cause[] {
  const found: Found[] = [];
  collect(schema, at, false, true, found);
  const out = found.map(unpruned).filter((c): c is Cause => c !== undefined);
  const schemas = found.map((f) => f.schema);
  out.push(...validateBatch(schemas, schemas.map((s) => s.default), found.map((f) => f.at)));
  return out;
}
