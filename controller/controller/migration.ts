import { isDeepStrictEqual } from 'node:util';
import { GVR, Kube } from '../runtime/kube';
import type { Result } from '../runtime/queue';
import { iso, ignoreGone } from '../runtime/status';
import { Caches } from './caches';
import { recordEvent } from './events';
import { pickNode } from './scheduler';

/**
 * The controller's half of live migration (docs/migration.md). It validates a
 * Migration, waits for a backup of the VM to finish (the two never overlap),
 * and picks the target node (phases Pending → Scheduling → PreparingTarget).
 * The node agents take it from there through the Migration's status: the
 * target agent starts an incoming instance (TargetReady), the source agent
 * migrates (Running) and, on success, rebinds the instance to the target
 * (Succeeded). Deleting a Migration before it ends cancels it; a finalizer
 * keeps the object until the agents have cleaned up.
 */
export const MIGRATION_FINALIZER = 'kubevm.dev/migration';
export const STORAGE_DOMAIN_LABEL = 'kubevm.dev/storage-domain';
const FINAL = new Set(['Succeeded', 'Failed']);
const ACTIVE = new Set(['Pending', 'Scheduling', 'PreparingTarget', 'TargetReady', 'Running']);

export function isActiveMigration(m: any): boolean {
  return !m.status?.phase || ACTIVE.has(m.status.phase);
}

/**
 * Why an instance cannot live-migrate whatever the target, from its spec (mirrors
 * the HAL's migratable(), which the source agent applies to the running VM):
 * a shared host directory (ContainerPath, the VM's own or a ContainerPathMount's).
 */
export function notMigratable(vmi: any): string | undefined {
  const shares: any[] = vmi.spec?.filesystems ?? [];
  const i = shares.findIndex((f) => f.containerPath);
  if (i < 0) return undefined;
  const f = shares[i];
  const what = f.mount ? `ContainerPathMount ${f.mount} (tag "${f.name}")` : `spec.filesystems[${i}] (tag "${f.name}")`;
  return `${what} shares a host directory (virtiofs or 9p); QEMU cannot live-migrate a VM with a shared directory`;
}

export class MigrationReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: Caches,
  ) {}

  async reconcile(k: string): Promise<Result | void> {
    const m = this.caches.migrations.get(k);
    if (!m) return;
    const ns = m.metadata.namespace;
    const fin: string[] = m.metadata.finalizers ?? [];
    const phase: string | undefined = m.status?.phase;
    if (m.metadata.deletionTimestamp) {
      // Agents are involved from PreparingTarget on; they end the migration (Failed, Cancelled) and clean up.
      const agentsInvolved = phase && ['PreparingTarget', 'TargetReady', 'Running'].includes(phase);
      if (fin.includes(MIGRATION_FINALIZER) && !agentsInvolved) await this.release(m, fin);
      return;
    }
    if (!fin.includes(MIGRATION_FINALIZER)) {
      await this.kube.mergePatch(GVR.migration, ns, m.metadata.name, { metadata: { finalizers: [...fin, MIGRATION_FINALIZER], resourceVersion: m.metadata.resourceVersion } }).catch(ignoreGone);
      return;
    }
    if (phase && FINAL.has(phase)) return;
    const fail = async (reason: string, message: string) => {
      await this.status(m, { phase: 'Failed', reason, message, endTime: iso(Date.now()) });
      await recordEvent(this.kube, m, 'Warning', reason, message);
    };
    if (!phase || phase === 'Pending') {
      const vm = this.caches.vms.get(`${ns}/${m.spec.vm}`);
      if (!vm) return fail('VirtualMachineNotFound', `spec.vm: VirtualMachine ${ns}/${m.spec.vm} not found`);
      const vmi = this.caches.vmis.get(`${ns}/${m.spec.vm}`);
      if (!vmi || vmi.status?.phase !== 'Running' || vmi.metadata.deletionTimestamp)
        return fail('NotRunning', `VirtualMachine ${m.spec.vm} is not running (instance phase ${vmi?.status?.phase ?? 'none'}); only a running VM migrates`);
      const other = [...this.caches.migrations.list()].find(
        (o) => o.metadata.namespace === ns && o.metadata.uid !== m.metadata.uid && o.spec.vm === m.spec.vm && o.status?.phase && ACTIVE.has(o.status.phase) && o.status.phase !== 'Pending',
      );
      if (other) return fail('AlreadyMigrating', `VirtualMachine ${m.spec.vm} is already migrating (Migration ${other.metadata.name})`);
      const backup = [...this.caches.backups.list()].find((b) => b.metadata.namespace === ns && b.spec.vm === m.spec.vm && ['Pending', 'Running'].includes(b.status?.phase));
      if (backup) {
        await this.status(m, { phase: 'Pending', reason: 'BackupInProgress', message: `waiting for Backup ${backup.metadata.name} of this VM to finish` });
        return { requeueAfterMs: 2000 };
      }
      await this.status(m, { phase: 'Scheduling', reason: undefined, message: 'choosing a target node', sourceNode: vmi.status.nodeName ?? vmi.spec.nodeName, instanceUID: vmi.metadata.uid, startTime: iso(Date.now()) });
      return;
    }
    if (phase === 'Scheduling') {
      const vm = this.caches.vms.get(`${ns}/${m.spec.vm}`);
      const vmi = this.caches.vmis.get(`${ns}/${m.spec.vm}`);
      if (!vm || !vmi || vmi.metadata.uid !== m.status.instanceUID) return fail('NotRunning', `the instance of VirtualMachine ${m.spec.vm} ended before the migration started`);
      const source = m.status.sourceNode;
      const sourceNode = this.caches.nodes.get(source);
      const domain = sourceNode?.metadata.labels?.[STORAGE_DOMAIN_LABEL];
      let candidates = [...this.caches.nodes.list()].filter((n) => n.metadata.name !== source && (!m.spec.targetNode || n.metadata.name === m.spec.targetNode));
      if (m.spec.targetNode && !candidates.length)
        return fail('Unschedulable', m.spec.targetNode === source ? `spec.targetNode: the VM already runs on ${source}` : `spec.targetNode: node ${m.spec.targetNode} does not exist`);
      // A cordoned node (kubevm node cordon|drain) takes no migrations; say so rather than "not ready".
      const cordoned = candidates.filter((n) => n.spec?.unschedulable).map((n) => n.metadata.name);
      if (cordoned.length && cordoned.length === candidates.length)
        return fail('Unschedulable', m.spec.targetNode ? `spec.targetNode: node ${m.spec.targetNode} is cordoned` : `every other node is cordoned: ${cordoned.join(', ')}`);
      // What no target can change is refused before one is chosen (the source agent checks the running VM again).
      const why = notMigratable(vmi);
      if (why) return fail('NotMigratable', `VirtualMachine ${m.spec.vm} cannot be live-migrated: ${why}`);
      const sharesStorage = (n: any) => !!domain && n.metadata.labels?.[STORAGE_DOMAIN_LABEL] === domain;
      if (m.spec.blockMigration && (vmi.spec.disks ?? []).length) {
        // A node that sees the source's disk files would mirror each disk onto itself.
        candidates = candidates.filter((n) => !sharesStorage(n));
        if (!candidates.length)
          return fail(
            'Unschedulable',
            `spec.blockMigration: ${m.spec.targetNode ? `node ${m.spec.targetNode} shares` : 'every other node shares'} storage with ${source} (storage domain ${domain}); copying the disks there would copy them onto themselves: migrate without blockMigration`,
          );
      }
      // Without block migration the target must see the same disk files: same storage domain.
      const shared = new Set<string>(m.spec.blockMigration ? [] : candidates.filter(sharesStorage).map((n) => n.metadata.name));
      if (!m.spec.blockMigration && !shared.size)
        return fail('Unschedulable', `no other node shares storage with ${source}${domain ? ` (storage domain ${domain})` : ''}: set spec.blockMigration to copy the disks`);
      const networks = [...this.caches.networks.list()].filter((n) => n.metadata.namespace === ns).map((n) => ({ name: n.metadata.name, type: n.spec?.type ?? 'pod' }));
      const picked = pickNode({ ...vm, spec: vmi.spec }, candidates, (n) => this.caches.usedOn(n), shared, networks);
      if ('error' in picked) return fail('Unschedulable', picked.error);
      await this.status(m, { phase: 'PreparingTarget', message: `starting the target instance on ${picked.node}`, targetNode: picked.node });
      await recordEvent(this.kube, m, 'Normal', 'TargetChosen', `migrating ${m.spec.vm} from ${source} to ${picked.node}`);
      return;
    }
    // PreparingTarget, TargetReady, Running: the agents' part. A node that went away fails it.
    for (const n of [m.status.sourceNode, m.status.targetNode]) {
      const node = n && this.caches.nodes.get(n);
      const ready = node && (node.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True');
      if (!ready) return fail('NodeLost', `node ${n} is gone or not ready`);
    }
  }

  private async release(m: any, fin: string[]): Promise<void> {
    await this.kube
      .mergePatch(GVR.migration, m.metadata.namespace, m.metadata.name, { metadata: { finalizers: fin.filter((f) => f !== MIGRATION_FINALIZER), resourceVersion: m.metadata.resourceVersion } })
      .catch(ignoreGone);
  }

  private async status(m: any, patch: any): Promise<void> {
    const status = { ...(m.status ?? {}), ...patch };
    for (const k of Object.keys(status)) if (status[k] === undefined) delete status[k];
    if (isDeepStrictEqual(status, m.status ?? {})) return;
    await this.kube.updateStatus(GVR.migration, { ...m, status }).catch(ignoreGone);
  }
}
