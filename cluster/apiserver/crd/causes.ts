/**
 * metav1.StatusCause values with apimachinery's wording (`field.Error.ErrorBody()`), so a 422 from
 * us reads like kube-apiserver's. `message` never contains the field; formatCauses prefixes it.
 */

export interface Cause {
  reason:
    | 'FieldValueInvalid'
    | 'FieldValueRequired'
    | 'FieldValueNotSupported'
    | 'FieldValueTooLong'
    | 'FieldValueDuplicate'
    | 'FieldValueForbidden'
    | 'FieldValueTypeInvalid';
  message: string;
  field: string;
}

/**
 * Go's `%v` for a float64 (strconv 'g', shortest): exponent form outside [1e-4, 1e6), e.g. `1e+06`.
 * Upstream prints JSON numbers that are not integers, and float limits such as `maximum`, this way.
 */
export function goFloat(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (!Number.isFinite(n)) return n > 0 ? '+Inf' : '-Inf';
  if (n === 0) return '0';
  const [mantissa, expPart] = n.toExponential().split('e');
  const exp = Number(expPart);
  if (exp < -4 || exp >= 6) {
    const digits = String(Math.abs(exp)).padStart(2, '0');
    return `${mantissa}e${exp < 0 ? '-' : '+'}${digits}`;
  }
  return String(n);
}

/**
 * A bad value as `ErrorBody` prints it: strings quoted, integers plain, other numbers like Go
 * floats, null as "null". Objects and arrays are printed as JSON (upstream prints Go syntax).
 */
export function formatValue(v: unknown): string {
  if (v === null || v === undefined) return '"null"';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : goFloat(v);
  if (typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

function withDetail(body: string, detail: string): string {
  return detail ? `${body}: ${detail}` : body;
}

export const cause = {
  invalid: (field: string, value: unknown, detail: string): Cause => ({
    reason: 'FieldValueInvalid',
    field,
    message: withDetail(`Invalid value: ${formatValue(value)}`, detail),
  }),
  typeInvalid: (field: string, value: unknown, detail: string): Cause => ({
    reason: 'FieldValueTypeInvalid',
    field,
    message: withDetail(`Invalid value: ${formatValue(value)}`, detail),
  }),
  required: (field: string, detail = ''): Cause => ({
    reason: 'FieldValueRequired',
    field,
    message: withDetail('Required value', detail),
  }),
  forbidden: (field: string, detail: string): Cause => ({
    reason: 'FieldValueForbidden',
    field,
    message: withDetail('Forbidden', detail),
  }),
  /** Upstream omits the (possibly huge) value from "Too long" messages. */
  tooLong: (field: string, max: number): Cause => ({
    reason: 'FieldValueTooLong',
    field,
    message: `Too long: may not be longer than ${max}`,
  }),
  duplicate: (field: string, value: unknown): Cause => ({
    reason: 'FieldValueDuplicate',
    field,
    message: `Duplicate value: ${formatValue(value)}`,
  }),
  /** `supported` are already strings; upstream quotes each one, numbers included. */
  notSupported: (field: string, value: unknown, supported: string[]): Cause => ({
    reason: 'FieldValueNotSupported',
    field,
    message: withDetail(
      `Unsupported value: ${formatValue(value)}`,
      supported.length ? `supported values: ${supported.map((s) => JSON.stringify(s)).join(', ')}` : '',
    ),
  }),
};

/**
 * The 422 message of `apierrors.NewInvalid`: `Widget.example.com "w1" is invalid: <aggregate>`,
 * where the aggregate drops repeated messages and is bracketed only when more than one remains.
 */
export function formatCauses(kind: string, name: string, causes: Cause[]): string {
  const seen = new Set<string>();
  for (const c of causes) seen.add(c.field ? `${c.field}: ${c.message}` : c.message);
  const parts = [...seen];
  const body = parts.length === 1 ? parts[0] : `[${parts.join(', ')}]`;
  return `${kind} ${JSON.stringify(name)} is invalid: ${body}`;
}
