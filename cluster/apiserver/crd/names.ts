/**
 * apimachinery's name rules (`k8s.io/apimachinery/pkg/util/validation`), returning upstream's
 * messages so causes match what kubectl users know. Each returns [] when the value is valid.
 */

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

/**
 * Only the first failing rule is reported, matching the server's own `validateName` so the
 * handler's de-duplication merges our metadata.name cause with its own.
 */
export function dns1123Subdomain(value: string): string[] {
  if (value.length > 253) return ['must be no more than 253 characters'];
  if (!DNS1123_SUBDOMAIN.test(value))
    return [
      "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
    ];
  return [];
}

export function dns1035Label(value: string): string[] {
  if (value.length > 63) return ['must be no more than 63 characters'];
  if (!DNS1035_LABEL.test(value))
    return [
      "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
    ];
  return [];
}

/** `NameIsDNSSubdomain(name, prefix=true)`: a generateName may end in '-'. */
export function dns1123SubdomainPrefix(value: string): string[] {
  return dns1123Subdomain(value.endsWith('-') ? value.slice(0, -1) + 'a' : value);
}
