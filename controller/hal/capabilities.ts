import type { Migratability } from './migration-types';
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
  spec.disks.forEach((d, i) => {
    if (d.changeTracking) needs.push({ capability: 'backup-cbt', field: `disks[${i}].changeTracking` });
  });
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

/**
 * Whether a VM of this spec can be live-migrated, and if not, why (for the
 * Migration status and a drain's message). Pure: looks at the spec only.
 *  - filesystems: a 9p share blocks migration while the guest has it mounted
 *    (QEMU: "Migration is disabled when VirtFS export path ... is mounted"), and
 *    vhost-user-fs (virtiofs) devices are unmigratable in QEMU 7.2: the daemon's
 *    state cannot move.
 * Host devices and confidential VMs (TDX) would block it too; VmSpec has neither.
 * Disks need shared storage or block mirroring, the caller's choice; bridge NICs
 * need the same bridge on the target node.
 */
export function migratable(spec: VmSpec): Migratability {
  const fs = spec.filesystems[0];
  if (fs)
    return {
      ok: false,
      reason: `spec.filesystems[0] (tag "${fs.tag}") shares a host directory (virtiofs or 9p); QEMU cannot live-migrate a VM with a shared directory`,
    };
  return { ok: true };
}
