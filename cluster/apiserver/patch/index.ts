/**
 * Patch semantics for the embedded API server: JSON merge patch, JSON patch, strategic merge
 * patch, server-side apply and managedFields bookkeeping. Pure functions on plain JSON; inputs
 * are never modified.
 */
import { FieldSet, fieldSetFromLeaves, flatten } from './fieldpath';
import { Json } from './json';
import { effectiveSchema } from './schema';

export { PatchError } from './errors';
export type { PatchErrorCause, PatchErrorCode, PatchErrorReason } from './errors';
export type { Json } from './json';
export { applyMergePatch } from './merge-patch';
export { applyJsonPatch, OBJECT_MODIFIED_MESSAGE } from './json-patch';
export { applyStrategicMergePatch } from './smp';
export { builtinSchema } from './schema';
export { serverSideApply } from './ssa';
export type { ApplyArgs } from './ssa';
export { updateManagedFields } from './managed-fields';
export type { ManagedFieldsEntry } from './managed-fields';

/**
 * The FieldsV1 form of the fields `obj` sets. Without a schema, the built-in schema for the
 * object's apiVersion/kind is used (ObjectMeta hints only for unknown kinds).
 */
export function fieldSetOf(obj: Json, schema?: Json): Json {
  return fieldSetFromLeaves(flatten(obj, effectiveSchema(schema, obj))).toFieldsV1();
}

/** Parse a FieldsV1 object into the list of owned paths (tokens), e.g. for tests or debugging. */
export function fieldsV1Paths(fieldsV1: Json): string[][] {
  return FieldSet.fromFieldsV1(fieldsV1).sorted();
}
