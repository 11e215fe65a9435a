import { createHash } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { GVR, Kube, isConflict, isNotFound } from '../runtime/kube';
import { Result } from '../runtime/queue';
import { Caches } from './caches';
import { recordEvent } from './events';

/**
 * Volume and Network reconcilers (the controller's half; agents create the
 * files and bridges on their nodes). A Volume is placed on a node and is
 * protected by a finalizer while any VirtualMachine refers to it.
 */
export const VOLUME_PROTECTION = 'kubevm.dev/volume-protection';
export const VOLUME_STORAGE = 'kubevm.dev/volume-storage';

export function usersOf(caches: Caches, ns: string, volume: string): string[] {
  const out: string[] = [];
  for (const vm of caches.vms.list())
    if (vm.metadata.namespace === ns && (vm.spec.disks ?? []).some((d: any) => d.volume === volume)) out.push(vm.metadata.name);
  return out.sort();
}

export function isFilesystem(v: any): boolean {
  return v?.spec?.volumeMode === 'Filesystem';
}

/** Backups whose points a Filesystem volume holds (or will: unfinished ones count; Failed ones hold nothing). */
function backupsIn(caches: Caches, ns: string, volume: string): any[] {
  return [...caches.backups.list()]
    .filter((b) => b.metadata.namespace === ns && b.spec?.target?.volume === volume && b.status?.phase !== 'Failed')
    .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
}

/** Why a Volume's spec cannot work, naming the field; undefined when it can. */
function volumeSpecError(v: any): string | undefined {
  if (!isFilesystem(v)) return undefined;
  const src = Object.keys(v.spec?.source ?? {}).filter((k) => k !== 'blank');
  if (src.length) return `spec.source.${src[0]}: a Filesystem volume is an empty directory; sources apply to Block volumes`;
  if (!v.spec?.size) return 'spec.size: required for a Filesystem volume (its capacity)';
  return undefined;
}

export class VolumeReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: Caches,
  ) {}

  async reconcile(k: string): Promise<Result | void> {
    const v = this.caches.volumes.get(k);
    if (!v) return;
    const ns = v.metadata.namespace;
    const name = v.metadata.name;
    const fsMode = isFilesystem(v);
    // A Filesystem volume is in use while Backups keep points in it (delete them, or their policy, first).
    const users = fsMode ? backupsIn(this.caches, ns, name).map((b) => `Backup/${b.metadata.name}`) : usersOf(this.caches, ns, name);
    const fin: string[] = v.metadata.finalizers ?? [];
    if (v.metadata.deletionTimestamp) {
      if (users.length) {
        const message = fsMode
          ? `deletion waits: holds the points of ${users.map((u) => u.replace('/', ' ')).join(', ')} (delete those Backups, or their BackupPolicy, first)`
          : `deletion waits: in use by ${users.map((u) => `VirtualMachine ${u}`).join(', ')}`;
        const blocked = (v.status?.conditions ?? []).find((c: any) => c.type === 'DeletionBlocked');
        if (blocked?.message !== message || !isDeepStrictEqual(v.status?.usedBy, users)) {
          await recordEvent(this.kube, v, 'Warning', 'VolumeInUse', message);
          const conditions = [
            ...(v.status?.conditions ?? []).filter((c: any) => c.type !== 'DeletionBlocked'),
            { type: 'DeletionBlocked', status: 'True', reason: 'VolumeInUse', message, lastTransitionTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') },
          ];
          await this.status(v, { ...v.status, usedBy: users, conditions });
        }
        return;
      }
      // Never placed (or its node is gone): no agent holds a file for it, so its storage finalizer goes too.
      const node = v.status?.nodeName;
      const noFile = !node || !this.caches.nodes.get(node);
      const drop = new Set([VOLUME_PROTECTION, ...(noFile ? [VOLUME_STORAGE] : [])]);
      if (fin.some((f) => drop.has(f)))
        await this.kube.mergePatch(GVR.volume, ns, name, { metadata: { finalizers: fin.filter((f) => !drop.has(f)), resourceVersion: v.metadata.resourceVersion } });
      return;
    }
    if (!fin.includes(VOLUME_PROTECTION) || !fin.includes(VOLUME_STORAGE)) {
      const next = [...new Set([...fin, VOLUME_PROTECTION, VOLUME_STORAGE])];
      await this.kube.mergePatch(GVR.volume, ns, name, { metadata: { finalizers: next, resourceVersion: v.metadata.resourceVersion } });
      return;
    }
    const status = { ...(v.status ?? {}) };
    status.usedBy = users;
    const bad = volumeSpecError(v);
    if (bad) {
      const next = { ...status, phase: 'Failed', message: bad };
      if (!isDeepStrictEqual(next, v.status)) await this.status(v, next);
      return;
    }
    if (!status.nodeName && fsMode && !v.spec.nodeName) {
      // Placed where it is first needed: backups are written by the agent of the node that backs the VM up.
      const first = backupsIn(this.caches, ns, name)
        .filter((b) => b.status?.node)
        .sort((a, b) => Date.parse(a.metadata.creationTimestamp ?? 0) - Date.parse(b.metadata.creationTimestamp ?? 0))[0];
      if (!first) {
        const next = { ...status, phase: 'Pending', message: 'placed on the node of the first Backup that targets it (or set spec.nodeName)' };
        if (!isDeepStrictEqual(next, v.status)) await this.status(v, next);
        return;
      }
      status.nodeName = first.status.node;
      status.phase = 'Pending';
      delete status.message;
    }
    if (!status.nodeName) {
      // A restore waits for its backup to succeed, and fails when it cannot.
      const from = v.spec.source?.fromBackup?.backup;
      if (from) {
        const b = this.caches.backups.get(`${ns}/${from}`);
        const bad = !b ? `source.fromBackup.backup: Backup ${ns}/${from} not found` : b.status?.phase === 'Failed' ? `source.fromBackup.backup: Backup ${from} failed; only Succeeded backups restore` : undefined;
        if (bad || b.status?.phase !== 'Succeeded') {
          const next = { ...status, phase: bad ? 'Failed' : 'Pending', message: bad ?? `waiting for Backup ${from} to succeed` };
          if (!isDeepStrictEqual(next, v.status)) await this.status(v, next);
          return bad ? undefined : { requeueAfterMs: 2000 };
        }
      }
      const node = v.spec.nodeName ?? this.placeVolume(v);
      if (!node) {
        status.phase = 'Pending';
        status.message = 'no node with a kubevm agent is ready';
        await this.status(v, status);
        return { requeueAfterMs: 2000 };
      }
      status.nodeName = node;
      status.phase = status.phase ?? 'Pending';
    }
    if (!isDeepStrictEqual(status, v.status)) await this.status(v, status);
  }

  /** A clone lives where its source is, a restore where its backup is; otherwise the ready, uncordoned node with the fewest volumes. */
  private placeVolume(v: any): string | undefined {
    const src = v.spec.source?.clone?.volume;
    if (src) return this.caches.volumes.get(`${v.metadata.namespace}/${src}`)?.status?.nodeName;
    const backup = v.spec.source?.fromBackup?.backup;
    if (backup) return this.caches.backups.get(`${v.metadata.namespace}/${backup}`)?.status?.node;
    const counts = new Map<string, number>();
    for (const n of this.caches.nodes.list())
      if ((n.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True') && !n.spec?.unschedulable && n.metadata.annotations?.['kubevm.dev/backends'])
        counts.set(n.metadata.name, 0);
    for (const o of this.caches.volumes.list()) if (counts.has(o.status?.nodeName)) counts.set(o.status.nodeName, counts.get(o.status.nodeName)! + 1);
    return [...counts.entries()].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1))[0]?.[0];
  }

  private async status(v: any, status: any): Promise<void> {
    try {
      await this.kube.updateStatus(GVR.volume, { ...v, status });
    } catch (e) {
      if (!isConflict(e) && !isNotFound(e)) throw e;
    }
  }
}

/** A Linux interface name (≤ 15 chars) for a Network's bridge, stable across nodes. */
export function bridgeName(ns: string, name: string): string {
  return `kvb${createHash('sha256').update(`${ns}/${name}`).digest('hex').slice(0, 10)}`;
}

export class NetworkReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: Caches,
  ) {}

  async reconcile(k: string): Promise<Result | void> {
    const n = this.caches.networks.get(k);
    if (!n || n.metadata.deletionTimestamp) return;
    let attached = 0;
    for (const vmi of this.caches.vmis.list())
      if (vmi.metadata.namespace === n.metadata.namespace) attached += (vmi.spec.interfaces ?? []).filter((i: any) => i.network === n.metadata.name).length;
    const status: any = { ...(n.status ?? {}), phase: 'Ready', attachedInterfaces: attached };
    if ((n.spec.type ?? 'pod') === 'bridge') status.bridgeName = bridgeName(n.metadata.namespace, n.metadata.name);
    else delete status.bridgeName;
    if (isDeepStrictEqual(status, n.status)) return;
    try {
      await this.kube.updateStatus(GVR.network, { ...n, status });
    } catch (e) {
      if (!isConflict(e) && !isNotFound(e)) throw e;
    }
  }
}
