import type { Backend, Capability, VmSpec } from './types';

/** A capability a spec needs, with the spec field that needs it (for error messages). */
export interface CapabilityNeed {
  capability: Capability;
  field: string;
}

/** What running this spec asks of a backend. */
export function requiredCapabilities(spec: VmSpec): CapabilityNeed[] {
  const needs: CapabilityNeed[] = [{ capability: 'lifecycle', field: 'spec' }];
  if (spec.kernel) needs.push({ capability: 'direct-kernel-boot', field: 'kernel' });
  if (spec.cloudInit) needs.push({ capability: 'cloud-init-nocloud', field: 'cloudInit' });
  spec.disks.forEach((d, i) =>
    needs.push({ capability: d.format === 'qcow2' ? 'disk-qcow2' : 'disk-raw', field: `disks[${i}].format` }),
  );
  spec.nics.forEach((n, i) => {
    needs.push({ capability: `network-${n.network}`, field: `nics[${i}].network` });
    if (n.portForwards?.length) needs.push({ capability: 'port-forward', field: `nics[${i}].portForwards` });
  });
  spec.filesystems.forEach((_f, i) => needs.push({ capability: 'filesystem', field: `filesystems[${i}]` }));
  return needs;
}

/**
 * The admission check: one message per missing capability, naming the backend,
 * the capability and the field that needs it. Empty when the backend can run the spec.
 */
export function missingCapabilities(backend: Pick<Backend, 'name' | 'capabilities'>, spec: VmSpec): string[] {
  const have = new Set(backend.capabilities());
  return requiredCapabilities(spec)
    .filter((n) => !have.has(n.capability))
    .map((n) => `backend "${backend.name}" lacks capability "${n.capability}" needed by spec.${n.field}`);
}
