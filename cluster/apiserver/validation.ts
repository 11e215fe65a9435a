import { StatusCause } from './errors';

/** Name and metadata rules of apimachinery, with upstream's messages. */
const SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_1035 = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export function validateName(rule: 'subdomain' | 'label' | 'label1035' | 'path', name: string, field = 'metadata.name'): StatusCause[] {
  const bad = (detail: string): StatusCause[] => [
    { reason: 'FieldValueInvalid', field, message: `Invalid value: ${JSON.stringify(name)}: ${detail}` },
  ];
  switch (rule) {
    case 'subdomain':
      if (name.length > 253) return bad('must be no more than 253 characters');
      if (!SUBDOMAIN.test(name))
        return bad(
          "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        );
      return [];
    case 'label':
      if (name.length > 63) return bad('must be no more than 63 characters');
      if (!LABEL.test(name))
        return bad(
          "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        );
      return [];
    case 'label1035':
      if (name.length > 63) return bad('must be no more than 63 characters');
      if (!LABEL_1035.test(name))
        return bad(
          "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        );
      return [];
    case 'path':
      if (name === '.' || name === '..') return bad(`may not be '${name}'`);
      if (name.includes('/') || name.includes('%')) return bad(`may not contain '/' or '%'`);
      return [];
  }
}

function validateQualifiedKey(key: string, field: string): StatusCause[] {
  const parts = key.split('/');
  const name = parts.length === 2 ? parts[1] : parts[0];
  const prefix = parts.length === 2 ? parts[0] : undefined;
  const causes: StatusCause[] = [];
  if (parts.length > 2 || !name || name.length > 63 || !QUALIFIED_NAME.test(name))
    causes.push({
      reason: 'FieldValueInvalid',
      field,
      message: `Invalid value: ${JSON.stringify(key)}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`,
    });
  if (prefix !== undefined && (prefix.length > 253 || !SUBDOMAIN.test(prefix)))
    causes.push({
      reason: 'FieldValueInvalid',
      field,
      message: `Invalid value: ${JSON.stringify(key)}: prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
    });
  return causes;
}

/** Labels, annotations, finalizers and ownerReferences: the parts of ObjectMeta every kind shares. */
export function validateObjectMeta(meta: any): StatusCause[] {
  const causes: StatusCause[] = [];
  if (meta.labels !== undefined && (typeof meta.labels !== 'object' || Array.isArray(meta.labels) || meta.labels === null)) {
    causes.push({ reason: 'FieldValueTypeInvalid', field: 'metadata.labels', message: 'Invalid value: must be a map of strings' });
  } else {
    for (const [k, v] of Object.entries(meta.labels ?? {})) {
      causes.push(...validateQualifiedKey(k, 'metadata.labels'));
      if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v))
        causes.push({
          reason: 'FieldValueInvalid',
          field: `metadata.labels`,
          message: `Invalid value: ${JSON.stringify(v)}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`,
        });
    }
  }
  for (const [k, v] of Object.entries(meta.annotations ?? {})) {
    causes.push(...validateQualifiedKey(k, 'metadata.annotations'));
    if (typeof v !== 'string')
      causes.push({ reason: 'FieldValueTypeInvalid', field: `metadata.annotations`, message: `Invalid value: annotation ${k} must be a string` });
  }
  let total = 0;
  for (const [k, v] of Object.entries(meta.annotations ?? {})) total += k.length + String(v).length;
  if (total > 256 * 1024)
    causes.push({ reason: 'FieldValueTooLong', field: 'metadata.annotations', message: `Too long: must have at most 262144 bytes` });
  if (meta.finalizers !== undefined && !Array.isArray(meta.finalizers))
    causes.push({ reason: 'FieldValueTypeInvalid', field: 'metadata.finalizers', message: 'Invalid value: must be a list of strings' });
  for (const [i, f] of (Array.isArray(meta.finalizers) ? meta.finalizers : []).entries()) {
    if (typeof f !== 'string' || validateQualifiedKey(f, '').length)
      causes.push({ reason: 'FieldValueInvalid', field: `metadata.finalizers[${i}]`, message: `Invalid value: ${JSON.stringify(f)}: must be a qualified name` });
  }
  for (const [i, o] of (Array.isArray(meta.ownerReferences) ? meta.ownerReferences : []).entries()) {
    for (const f of ['apiVersion', 'kind', 'name', 'uid'])
      if (!o?.[f])
        causes.push({ reason: 'FieldValueRequired', field: `metadata.ownerReferences[${i}].${f}`, message: 'Required value' });
  }
  return causes;
}
