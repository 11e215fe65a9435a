import { isDeepStrictEqual } from 'node:util';
import { GVR, Kube, isConflict, isNotFound } from '../runtime/kube';
import type { Result } from '../runtime/queue';
import { removeCondition, setCondition, withoutConditionTimes as stripTimes } from '../runtime/status';
import { Caches } from './caches';

/**
 * ContainerPathMounts: a directory of the node attached to a VM like a volume
 * attachment. The VM reconciler merges the mounts that target a VM into its
 * instance's spec.filesystems (`mergedFilesystems`); the node agent shares them
 * with the running guest and reports each filesystem in the instance status;
 * the MountReconciler here folds that report into each mount's status. A mount
 * is Attached only once the agent reported it shared with the current instance.
 */

/** A filesystem item as the instance spec holds it (server defaults included, so patches settle). */
export interface InstanceFilesystem {
  name: string;
  containerPath: { path: string; readOnly: boolean };
  mount?: string;
}

export interface Merged {
  /** The VM's own filesystems, then its mounts' (oldest mount first). */
  filesystems: any[];
  /** Mounts left out, by mount name, with the reason (a tag another filesystem already uses). */
  conflicts: Map<string, string>;
}

/** Mounts of a VM that are not being deleted, oldest first (ties by name): the order that decides tag conflicts. */
export function mountsOf(caches: Caches, ns: string, vmName: string): any[] {
  const out: any[] = [];
  for (const m of caches.mounts.list())
    if (m.metadata.namespace === ns && m.spec?.vm === vmName && !m.metadata.deletionTimestamp) out.push(m);
  return out.sort(
    (a, b) =>
      String(a.metadata.creationTimestamp ?? '').localeCompare(String(b.metadata.creationTimestamp ?? '')) ||
      (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0),
  );
}

/** The filesystems an instance of `vm` should have: its own plus those of its mounts, tags unique. */
export function mergedFilesystems(caches: Caches, vm: any): Merged {
  const own: any[] = vm.spec?.filesystems ?? [];
  const filesystems: any[] = [...own];
  const conflicts = new Map<string, string>();
  const byTag = new Map<string, string>(own.map((f) => [f.name, `the VM's own filesystem ${f.name}`]));
  for (const m of mountsOf(caches, vm.metadata.namespace, vm.metadata.name)) {
    const tag = m.spec.tag;
    const holder = byTag.get(tag);
    if (holder) {
      conflicts.set(
        m.metadata.name,
        `tag ${tag} is already used by ${holder} of VirtualMachine ${vm.metadata.name}; choose another tag`,
      );
      continue;
    }
    byTag.set(tag, `ContainerPathMount ${m.metadata.name}`);
    const item: InstanceFilesystem = { name: tag, containerPath: { path: m.spec.path, readOnly: true }, mount: m.metadata.name };
    filesystems.push(item);
  }
  return { filesystems, conflicts };
}

/** Whether the agent reports filesystems that only a restart brings in line with the spec. */
export function filesystemsAwaitRestart(vmi: any): boolean {
  return (vmi?.status?.filesystems ?? []).some((f: any) => f.phase === 'Pending' || f.phase === 'DetachPending');
}

const FINISHED = new Set(['Succeeded', 'Failed']);

export class MountReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: Caches,
    private readonly now: () => number = Date.now,
  ) {}

  async reconcile(k: string): Promise<Result | void> {
    const m = this.caches.mounts.get(k);
    if (!m || m.metadata.deletionTimestamp) return;
    const status: any = { ...(m.status ?? {}), ...this.observe(m), observedGeneration: m.metadata.generation };
    for (const f of ['node', 'instanceUID', 'message'] as const) if (status[f] === undefined) delete status[f];
    const now = this.now();
    const attached = status.phase === 'Attached';
    setCondition(status, 'Attached', attached ? 'True' : 'False', status.reason, attached ? '' : (status.message ?? ''), now);
    if (status.reason === 'AttachAtNextStart')
      setCondition(status, 'RestartRequired', 'True', 'AttachAtNextStart', status.message ?? '', now);
    else removeCondition(status, 'RestartRequired');
    if (isDeepStrictEqual(stripTimes(status), stripTimes(m.status ?? {}))) return;
    try {
      await this.kube.updateStatus(GVR.containerPathMount, { ...m, status });
    } catch (e) {
      if (isNotFound(e)) return;
      if (isConflict(e)) return { requeueAfterMs: 100 };
      throw e;
    }
  }

  /** What really happened to the mount: from its VM, the merge, and the instance status the agent wrote. */
  private observe(m: any): { phase: string; reason: string; message?: string; node?: string; instanceUID?: string } {
    const ns = m.metadata.namespace;
    const vmName = m.spec.vm;
    const vm = this.caches.vms.get(`${ns}/${vmName}`);
    if (!vm || vm.metadata.deletionTimestamp)
      return {
        phase: 'Pending',
        reason: 'VMNotFound',
        message: `VirtualMachine ${vmName} not found: the share is attached once it exists and runs`,
      };
    const conflict = mergedFilesystems(this.caches, vm).conflicts.get(m.metadata.name);
    if (conflict) return { phase: 'Failed', reason: 'TagConflict', message: conflict };
    const vmi = this.caches.vmis.get(`${ns}/${vmName}`);
    const current =
      vmi &&
      (vmi.metadata.ownerReferences ?? []).some((o: any) => o.uid === vm.metadata.uid) &&
      !vmi.metadata.deletionTimestamp &&
      !FINISHED.has(vmi.status?.phase);
    if (!current)
      return {
        phase: 'Pending',
        reason: 'VMNotRunning',
        message: `VirtualMachine ${vmName} is not running: the share is attached at its next start`,
      };
    const where = { node: vmi.spec.nodeName, instanceUID: vmi.metadata.uid };
    const entry = (vmi.status?.filesystems ?? []).find(
      (f: any) => f.name === m.spec.tag && f.mount === m.metadata.name && f.path === m.spec.path,
    );
    switch (entry?.phase) {
      case 'Attached':
        return {
          phase: 'Attached',
          reason: 'Attached',
          message: `shared with instance ${vmi.metadata.uid} on node ${vmi.spec.nodeName} as tag ${m.spec.tag}`,
          ...where,
        };
      case 'Failed':
        return {
          phase: 'Failed',
          reason: 'AttachFailed',
          message: entry.message ?? 'the node agent could not share the directory',
          ...where,
        };
      case 'Pending':
        return {
          phase: 'Pending',
          reason: 'AttachAtNextStart',
          message: entry.message ?? 'shared at the next start of the VM',
          ...where,
        };
    }
    const starting = vmi.status?.phase !== 'Running';
    return {
      phase: 'Pending',
      reason: 'Attaching',
      message: starting
        ? `instance ${vmi.metadata.uid} is starting`
        : `waiting for the node agent on ${vmi.spec.nodeName} to share it`,
      ...where,
    };
  }
}
