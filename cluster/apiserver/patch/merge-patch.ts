/** JSON merge patch (RFC 7386): maps merge recursively, null deletes, everything else replaces. */
import { Json, clone, isObject } from './json';

export function applyMergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const result: Json = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) {
      delete result[key];
    } else {
      result[key] = applyMergePatch(result[key], value);
    }
  }
  // Untouched members were copied shallowly above; clone so the result never aliases `target`.
  for (const key of Object.keys(result)) {
    if (!Object.prototype.hasOwnProperty.call(patch, key)) result[key] = clone(result[key]);
  }
  return result;
}
