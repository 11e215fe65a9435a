import { isDeepStrictEqual } from 'node:util';

/**
 * Pulumi's special values as they travel in a google.protobuf.Struct
 * (@pulumi/pulumi runtime/rpc.js): secrets are objects keyed by the signature
 * key, unknowns (previews) a sentinel string. The provider accepts secrets, so it
 * receives them wrapped anywhere in a value and must wrap what it returns.
 */
export const UNKNOWN = '04da6b54-80e4-46f7-96ec-b56ff0331ba9';
export const SIG_KEY = '4dabf18193072939515e22adb298388d';
export const SECRET_SIG = '1b47061264138c4ac30d75fd1eb44270';
export const RESOURCE_SIG = '5cf8f73096256a8f31e491e813e4eb8e';
export const OUTPUT_SIG = 'd0e6a833031e9bbcd3f4e8bde6ca49a4';

export type Json = any;

export const isObject = (v: unknown): v is Record<string, any> => typeof v === 'object' && v !== null && !Array.isArray(v);
export const isSecret = (v: unknown): boolean => isObject(v) && v[SIG_KEY] === SECRET_SIG;
export const secret = (value: Json): Json => (value === undefined || isSecret(value) ? value : { [SIG_KEY]: SECRET_SIG, value });

/** Whether a value (or anything inside it) is a secret. */
export function containsSecret(v: unknown): boolean {
  if (isSecret(v)) return true;
  if (Array.isArray(v)) return v.some(containsSecret);
  if (isObject(v)) return Object.values(v).some(containsSecret);
  return false;
}

/** Whether a value (or anything inside it) is unknown (a preview placeholder). */
export function containsUnknown(v: unknown): boolean {
  if (v === UNKNOWN) return true;
  if (Array.isArray(v)) return v.some(containsUnknown);
  if (isObject(v)) {
    if (v[SIG_KEY] === OUTPUT_SIG) return !('value' in v) || containsUnknown(v.value);
    return Object.values(v).some(containsUnknown);
  }
  return false;
}

/**
 * Plain values: secrets unwrapped, output values replaced by their value (or
 * UNKNOWN), resource references by their id (or urn), deeply.
 */
export function plain(v: Json): Json {
  if (Array.isArray(v)) return v.map(plain);
  if (!isObject(v)) return v;
  const sig = v[SIG_KEY];
  if (sig === SECRET_SIG) return plain(v.value);
  if (sig === OUTPUT_SIG) return 'value' in v ? plain(v.value) : UNKNOWN;
  if (sig === RESOURCE_SIG) return v.id ?? v.urn;
  const out: Record<string, Json> = {};
  for (const [k, x] of Object.entries(v)) out[k] = plain(x);
  return out;
}

/** Deletes unknown values (deeply), for validation that should skip what is not known yet. */
export function withoutUnknowns(v: Json): Json {
  if (Array.isArray(v)) return v.filter((x) => x !== UNKNOWN).map(withoutUnknowns);
  if (!isObject(v)) return v;
  const out: Record<string, Json> = {};
  for (const [k, x] of Object.entries(v)) if (x !== UNKNOWN) out[k] = withoutUnknowns(x);
  return out;
}

export const deepEqual = (a: unknown, b: unknown): boolean => isDeepStrictEqual(a, b);
export const clone = <T>(v: T): T => (v === undefined ? v : JSON.parse(JSON.stringify(v)));

/**
 * Wraps top-level properties as secrets: those named in `always` (when present)
 * and those whose raw value (`raw`, as it came from the engine) held a secret.
 */
export function wrapSecrets(props: Record<string, Json>, always: string[], raw: Record<string, Json> = {}): Record<string, Json> {
  const out: Record<string, Json> = { ...props };
  for (const k of Object.keys(out)) {
    if (out[k] === undefined) continue;
    if (always.includes(k) || containsSecret(raw[k])) out[k] = secret(plain(out[k]));
  }
  return out;
}
