/**
 * Small pieces of the resource options the engine honours: custom timeouts
 * (Go-style durations, as Pulumi writes them), provider references
 * (`<provider urn>::<provider id>`) and the message for resources of packages
 * the local engine cannot run.
 */

/** Per-operation timeouts in seconds (absent: the provider's default). */
export interface Timeouts {
  create?: number;
  update?: number;
  delete?: number;
}

const UNIT_SECONDS: Record<string, number> = { ns: 1e-9, us: 1e-6, µs: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 };

/**
 * A Go duration (`"90s"`, `"5m"`, `"1h30m"`, `"1.5h"`, `"300ms"`) in seconds;
 * `""` is absent. `field` names the option in the error.
 */
export function parseDuration(value: string, field: string): number | undefined {
  if (value === '') return undefined;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while (pos < value.length && (m = re.exec(value))) {
    total += Number(m[1]) * UNIT_SECONDS[m[2]];
    pos = re.lastIndex;
  }
  if (pos !== value.length || total <= 0) {
    throw new Error(`${field}: ${JSON.stringify(value)} is not a positive duration (a number and a unit: "90s", "5m", "1h30m")`);
  }
  return total;
}

/** The `customTimeouts` of a RegisterResourceRequest (absent or empty members are left out). */
export function readTimeouts(
  ct: { getCreate(): string; getUpdate(): string; getDelete(): string } | undefined,
): Timeouts | undefined {
  if (!ct) return undefined;
  const out: Timeouts = {};
  for (const [k, v] of [
    ['create', ct.getCreate()],
    ['update', ct.getUpdate()],
    ['delete', ct.getDelete()],
  ] as const) {
    const s = parseDuration(v, `customTimeouts.${k}`);
    if (s !== undefined) out[k] = s;
  }
  return Object.keys(out).length ? out : undefined;
}

/** The provider resource's URN in a provider reference `urn::id` ('' = the default provider). */
export function providerRefUrn(ref: string): string {
  if (!ref) return '';
  const i = ref.lastIndexOf('::');
  if (i <= 0 || !ref.startsWith('urn:pulumi:'))
    throw new Error(`provider reference ${JSON.stringify(ref)} is not of the form <urn>::<id>`);
  return ref.slice(0, i);
}

/** The package of a type token: `kubernetes` for `kubernetes:core/v1:Namespace` and `pulumi:providers:kubernetes`. */
export function packageOf(type: string): string {
  return type.startsWith('pulumi:providers:') ? type.slice('pulumi:providers:'.length) : type.split(':')[0];
}

/** Why a resource of another package cannot run here, and what to do instead (the engine prefixes the resource name). */
export function otherPackageMessage(type: string): string {
  return (
    `${type} belongs to the "${packageOf(type)}" package: only kubevm resources run in the local engine; ` +
    'run this program with the Pulumi CLI (`pulumi up`) instead'
  );
}
