import { isIPv4, isIPv6 } from 'node:net';

/**
 * String formats kube-apiserver validates in CRD schemas (apiextensions `formats.go`), written
 * after go-openapi's `strfmt` checks. Upstream strips every other format before validating, and
 * so does `toAjvSchema`; numeric formats (int32, double, ...) are never checked.
 *
 * Keys are normalised like go-openapi does: dashes removed ("date-time" -> "datetime").
 */

const RFC3339_TIME = /^(\d{2}):(\d{2}):(\d{2})(\.\d+)?(z|[+-]\d{2}:\d{2})$/;
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const UUID = /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const UUID3 = /^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i;
const UUID4 = /^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$/i;
const UUID5 = /^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$/i;
const HOSTNAME_LABEL = /^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$/;
const MAC = /^(?:[0-9a-fA-F]{2}[:-]){5,19}[0-9a-fA-F]{2}$|^(?:[0-9a-fA-F]{4}\.){2,9}[0-9a-fA-F]{4}$/;
// Go's time.ParseDuration plus strfmt's spelled-out units ("3 days").
const DURATION =
  /^[-+]?(?:\d+(?:\.\d*)?|\.\d+)\s*(?:ns|us|µs|ms|s|m|h|d|w|nanoseconds?|microseconds?|milliseconds?|seconds?|minutes?|hours?|days?|weeks?)(?:\s*(?:\d+(?:\.\d*)?|\.\d+)\s*(?:ns|us|µs|ms|s|m|h|d|w|nanoseconds?|microseconds?|milliseconds?|seconds?|minutes?|hours?|days?|weeks?))*$|^0$/;
const QUANTITY =
  /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?(?:\d+(?:\.\d*)?|\.\d+))?$/;

function isDate(s: string): boolean {
  const m = DATE.exec(s);
  if (!m) return false;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const dt = new Date(Date.UTC(y, mo - 1, d));
  return dt.getUTCFullYear() === y && dt.getUTCMonth() === mo - 1 && dt.getUTCDate() === d;
}

/** strfmt.IsDateTime: a valid date, "T", then a time with a zone; case-insensitive. */
function isDateTime(s: string): boolean {
  const parts = s.toLowerCase().split('t');
  if (parts.length !== 2 || !isDate(parts[0])) return false;
  const m = RFC3339_TIME.exec(parts[1]);
  return !!m && m[1] <= '23' && m[2] <= '59' && m[3] <= '59';
}

function isHostname(s: string): boolean {
  if (s.length === 0 || s.length > 255) return false;
  return s.split('.').every((l) => l.length <= 63 && HOSTNAME_LABEL.test(l));
}

function isCidr(s: string): boolean {
  const [ip, bits, ...rest] = s.split('/');
  if (rest.length || bits === undefined || !/^\d{1,3}$/.test(bits)) return false;
  const max = isIPv4(ip) ? 32 : isIPv6(ip) ? 128 : -1;
  return Number(bits) <= max;
}

/** Go's url.ParseRequestURI: an absolute URI, or an absolute path. */
function isUri(s: string): boolean {
  if (s.startsWith('/')) return !/\s/.test(s);
  try {
    return new URL(s).protocol.length > 1;
  } catch {
    return false;
  }
}

export const FORMAT_CHECKS: Record<string, (s: string) => boolean> = {
  datetime: isDateTime,
  date: isDate,
  byte: (s) => BASE64.test(s),
  uuid: (s) => UUID.test(s),
  uuid3: (s) => UUID3.test(s),
  uuid4: (s) => UUID4.test(s),
  uuid5: (s) => UUID5.test(s),
  email: (s) => /^[^@\s]+@[^@\s]+$/.test(s),
  hostname: isHostname,
  ipv4: (s) => isIPv4(s),
  ipv6: (s) => isIPv6(s),
  cidr: isCidr,
  mac: (s) => MAC.test(s),
  uri: isUri,
  duration: (s) => DURATION.test(s),
  hexcolor: (s) => /^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/.test(s),
  rgbcolor: (s) => /^rgb\(\s*\d{1,3}\s*,\s*\d{1,3}\s*,\s*\d{1,3}\s*\)$/.test(s),
  bsonobjectid: (s) => /^[0-9a-fA-F]{24}$/.test(s),
  quantity: (s) => QUANTITY.test(s),
  password: () => true,
};

/** The checker for a format as written in a schema, or undefined when upstream ignores it. */
export function formatCheck(format: string): ((s: string) => boolean) | undefined {
  return FORMAT_CHECKS[format.replace(/-/g, '')];
}
