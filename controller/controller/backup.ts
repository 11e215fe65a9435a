import { isDeepStrictEqual } from 'node:util';
import { GVR, Kube, isConflict } from '../runtime/kube';
import type { Result } from '../runtime/queue';
import { iso, ignoreGone, setCondition, removeCondition, withoutConditionTimes } from '../runtime/status';
import { Caches } from './caches';
import { recordEvent } from './events';
import { BackupSchedule, planRetention, decideFull, type PointInfo } from './backup-policy';

/**
 * The controller's half of backups (docs/backup.md). Node agents do the data
 * work (controller/agent/backups.ts); the controller:
 *  - BackupReconciler: validates a Backup, labels it, puts the files
 *    finalizer on it, and hands it to the agent of the node that holds the VM's
 *    volumes (status.phase Pending, status.node).
 *  - BackupPolicyReconciler: runs schedules (one Backup per selected VM per
 *    run, named after the scheduled time so that a controller restart never
 *    makes a run twice), picks Full or Incremental, applies retention without
 *    breaking a chain, and summarises the chains in status.
 */
export const BACKUP_FILES = 'kubevm.dev/backup-files';
export const LABEL_VM = 'kubevm.dev/vm';
export const LABEL_POLICY = 'kubevm.dev/backup-policy';
export const ANN_SCHEDULED = 'kubevm.dev/scheduled-time';
/** Retention asks the agent to fold points into a kept one: its new base ('' = none) and the points folded in. */
export const ANN_MERGE_ONTO = 'kubevm.dev/merge-onto';
export const ANN_MERGE_FROM = 'kubevm.dev/merge-from';

const FINISHED = new Set(['Succeeded', 'Failed']);
/** Migration phases in which the agents move the instance. */
const MIGRATING = new Set(['Scheduling', 'PreparingTarget', 'TargetReady', 'Running']);

/** The moment a point restores to: its start (else when it was scheduled or created). */
function timeOf(b: any): number {
  return Date.parse(b.status?.startTime ?? b.metadata.annotations?.[ANN_SCHEDULED] ?? b.metadata.creationTimestamp);
}

/** The disks a backup covers: the named ones, else every writable disk of the VM. */
export function backupDisks(vm: any, names: string[] | undefined): { disks: any[]; error?: string } {
  const all: any[] = vm.spec?.disks ?? [];
  if (!names?.length) return { disks: all.filter((d) => !d.readOnly) };
  const out: any[] = [];
  for (const [i, n] of names.entries()) {
    const d = all.find((x) => x.name === n);
    if (!d) return { disks: [], error: `spec.disks[${i}]: VirtualMachine ${vm.metadata.name} has no disk ${JSON.stringify(n)}` };
    out.push(d);
  }
  return { disks: out };
}

export class BackupReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: Caches,
  ) {}

  async reconcile(k: string): Promise<Result | void> {
    const b = this.caches.backups.get(k);
    if (!b) return;
    const ns = b.metadata.namespace;
    const fin: string[] = b.metadata.finalizers ?? [];
    if (b.metadata.deletionTimestamp) {
      // Nothing was written anywhere, or the node is gone: nobody else will release it.
      const node = b.status?.node;
      const nodeGone = node && !this.caches.nodes.get(node);
      if (fin.includes(BACKUP_FILES) && (!node || nodeGone)) {
        if (nodeGone) await recordEvent(this.kube, b, 'Warning', 'NodeGone', `node ${node} no longer exists; its files for this backup (if any) are left there`);
        await this.kube.mergePatch(GVR.backup, ns, b.metadata.name, { metadata: { finalizers: fin.filter((f) => f !== BACKUP_FILES), resourceVersion: b.metadata.resourceVersion } }).catch(ignoreGone);
      }
      return;
    }
    const labels = { ...(b.metadata.labels ?? {}) };
    labels[LABEL_VM] = b.spec.vm;
    if (b.spec.policy) labels[LABEL_POLICY] = b.spec.policy;
    if (!fin.includes(BACKUP_FILES) || !isDeepStrictEqual(labels, b.metadata.labels ?? {})) {
      await this.kube.mergePatch(GVR.backup, ns, b.metadata.name, { metadata: { labels, finalizers: [...new Set([...fin, BACKUP_FILES])], resourceVersion: b.metadata.resourceVersion } }).catch(ignoreGone);
      return;
    }
    if (b.status?.phase) return; // from Pending on, the node agent owns the status
    const fail = (reason: string, message: string) => this.status(b, { phase: 'Failed', reason, message, completionTime: iso(Date.now()) });
    const vm = this.caches.vms.get(`${ns}/${b.spec.vm}`);
    if (!vm) return fail('VirtualMachineNotFound', `spec.vm: VirtualMachine ${ns}/${b.spec.vm} not found`);
    const { disks, error } = backupDisks(vm, b.spec.disks);
    if (error) return fail('InvalidSpec', error);
    if (!disks.length) return fail('InvalidSpec', `spec.disks: VirtualMachine ${b.spec.vm} has no writable disk to back up`);
    const nodes = new Set<string>();
    for (const d of disks) {
      const v = this.caches.volumes.get(`${ns}/${d.volume}`);
      if (!v || v.status?.phase !== 'Ready') {
        await this.status(b, { message: `waiting for Volume ${d.volume} (disk ${d.name}) to be Ready` });
        return { requeueAfterMs: 2000 };
      }
      nodes.add(v.status.nodeName);
    }
    if (nodes.size > 1) return fail('InvalidSpec', `the disks' volumes are on different nodes (${[...nodes].sort().join(', ')})`);
    // A backup and a live migration never overlap: the backup waits (a migration waits for a Pending or Running backup).
    const migration = [...this.caches.migrations.list()].find((m) => m.metadata.namespace === ns && m.spec?.vm === b.spec.vm && MIGRATING.has(m.status?.phase));
    if (migration) {
      await this.status(b, { message: `waiting for Migration ${migration.metadata.name} of VirtualMachine ${b.spec.vm} to finish` });
      return { requeueAfterMs: 2000 };
    }
    // A running VM is backed up where its instance runs (after a live migration that need not be where its
    // volumes were made: the dirty bitmaps live in that QEMU); a stopped one where its volumes are.
    const vmi = this.caches.vmis.get(`${ns}/${b.spec.vm}`);
    const live = vmi && vmi.spec?.nodeName && !vmi.metadata.deletionTimestamp && !FINISHED.has(vmi.status?.phase);
    const node = live ? (vmi.spec.nodeName as string) : [...nodes][0];
    const t = b.spec.target ?? {};
    if (t.path && t.volume) return fail('InvalidSpec', 'spec.target: set path or volume, not both');
    if (t.volume) {
      const tv = this.caches.volumes.get(`${ns}/${t.volume}`);
      if (!tv) {
        await this.status(b, { message: `waiting for Volume ${t.volume} (spec.target.volume) to exist` });
        return { requeueAfterMs: 2000 };
      }
      if (tv.spec?.volumeMode !== 'Filesystem')
        return fail('InvalidSpec', `spec.target.volume: Volume ${t.volume} has volumeMode ${tv.spec?.volumeMode ?? 'Block'} (a disk image); backups need a Filesystem volume`);
      if (tv.status?.phase === 'Failed') return fail('InvalidSpec', `spec.target.volume: Volume ${t.volume} failed: ${tv.status.message ?? 'no detail'}`);
      const where = tv.status?.nodeName ?? tv.spec?.nodeName;
      if (where && where !== node)
        return fail(
          'InvalidSpec',
          `spec.target.volume: Volume ${t.volume} is on node ${where}, but VirtualMachine ${b.spec.vm} is backed up on node ${node} (node-local storage: the target must be on the node that writes the points)`,
        );
    }
    await this.status(b, { phase: 'Pending', node, message: 'waiting for the node agent' });
  }

  private async status(b: any, patch: any): Promise<void> {
    const status = { ...(b.status ?? {}), ...patch };
    if (isDeepStrictEqual(status, b.status ?? {})) return;
    await this.kube.updateStatus(GVR.backup, { ...b, status }).catch(ignoreGone);
  }
}

/** The VMs a policy selects: named ones plus label matches, in its namespace, sorted. */
export function selectedVms(caches: Caches, p: any): string[] {
  const ns = p.metadata.namespace;
  const out = new Set<string>();
  for (const n of p.spec.vms ?? []) if (caches.vms.get(`${ns}/${n}`)) out.add(n);
  const ml = p.spec.selector?.matchLabels;
  if (ml && Object.keys(ml).length)
    for (const vm of caches.vms.list())
      if (vm.metadata.namespace === ns && Object.entries(ml).every(([k, v]) => vm.metadata.labels?.[k] === v)) out.add(vm.metadata.name);
  return [...out].sort();
}

/** Backup names: `<policy>-<vm>-<yyyymmdd-hhmmss>` of the scheduled time (UTC); deterministic, so a run is made once. */
export function backupName(policy: string, vm: string, at: number): string {
  const stamp = new Date(at).toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15).toLowerCase();
  return `${policy}-${vm}-${stamp}`;
}

export class BackupPolicyReconciler {
  /** Overridable clock, for tests that simulate time. */
  now: () => number = () => Date.now();

  constructor(
    private readonly kube: Kube,
    private readonly caches: Caches,
  ) {}

  backupsOf(p: any): any[] {
    const out: any[] = [];
    for (const b of this.caches.backups.list())
      if (b.metadata.namespace === p.metadata.namespace && b.spec?.policy === p.metadata.name) out.push(b);
    return out;
  }

  async reconcile(k: string): Promise<Result | void> {
    const p = this.caches.backupPolicies.get(k);
    if (!p || p.metadata.deletionTimestamp) return;
    const now = this.now();
    const status: any = JSON.parse(JSON.stringify(p.status ?? {}));
    status.observedGeneration = p.metadata.generation;
    let schedule: BackupSchedule;
    try {
      schedule = new BackupSchedule(p.spec.schedule, p.spec.timeZone ?? 'UTC');
    } catch (e) {
      setCondition(status, 'Ready', 'False', 'InvalidSchedule', (e as Error).message, now);
      delete status.nextScheduleTime;
      await this.status(p, status);
      return;
    }
    setCondition(status, 'Ready', 'True', 'Scheduled', '', now);
    const vms = selectedVms(this.caches, p);
    if (!vms.length) setCondition(status, 'NoVirtualMachines', 'True', 'NothingSelected', 'spec.vms and spec.selector match no VirtualMachine in this namespace', now);
    else removeCondition(status, 'NoVirtualMachines');
    let backups = this.backupsOf(p);

    // Schedule: run the newest due time (missed older ones are skipped, as a CronJob without a deadline does).
    let requeue = 3_600_000;
    if (p.spec.paused) {
      delete status.nextScheduleTime;
    } else {
      const from = Date.parse(status.lastScheduleTime ?? p.metadata.creationTimestamp);
      const { due, next } = schedule.dueBetween(from, now);
      if (due !== undefined) {
        for (const vm of vms) {
          const made = await this.createRun(p, vm, due, backups, now);
          if (made) backups.push(made);
        }
        status.lastScheduleTime = iso(due);
      }
      status.nextScheduleTime = iso(next);
      requeue = Math.max(100, next - now);
    }

    // Retention (also while paused), per VM chain.
    const deleted = new Set<string>();
    if (p.spec.retention) {
      const byVm = new Map<string, any[]>();
      for (const b of backups) byVm.set(b.spec.vm, [...(byVm.get(b.spec.vm) ?? []), b]);
      for (const list of byVm.values()) {
        const plan = planRetention(list.map(pointOf), p.spec.retention, now, p.spec.timeZone ?? 'UTC');
        // Merges are the node agent's (it rewrites the kept point's files); the folded points go once it is done.
        for (const m of plan.merges) {
          const kept = list.find((x) => x.metadata.name === m.point);
          const want = { [ANN_MERGE_ONTO]: m.onto ?? '', [ANN_MERGE_FROM]: m.merged.join(',') };
          const ann = kept?.metadata.annotations ?? {};
          if (!kept || kept.metadata.deletionTimestamp || (ann[ANN_MERGE_ONTO] === want[ANN_MERGE_ONTO] && ann[ANN_MERGE_FROM] === want[ANN_MERGE_FROM])) continue;
          await this.kube.mergePatch(GVR.backup, p.metadata.namespace, m.point, { metadata: { annotations: want } }).catch(ignoreGone);
          await recordEvent(this.kube, p, 'Normal', 'MergeRequested', m.description);
        }
        for (const name of plan.remove) {
          const b = list.find((x) => x.metadata.name === name);
          if (!b || b.metadata.deletionTimestamp) continue;
          await this.kube.delete(GVR.backup, p.metadata.namespace, name);
          deleted.add(name);
        }
      }
      if (deleted.size) await recordEvent(this.kube, p, 'Normal', 'RetentionApplied', `deleted ${deleted.size} backup(s): ${[...deleted].sort().join(', ')}`);
    }
    backups = backups.filter((b) => !deleted.has(b.metadata.name) && !b.metadata.deletionTimestamp);

    // Chains and the last run's result.
    const chains: any[] = [];
    for (const vm of [...new Set([...vms, ...backups.map((b) => b.spec.vm)])].sort()) {
      const ok = backups.filter((b) => b.spec.vm === vm && b.status?.phase === 'Succeeded').sort((a, b) => timeOf(a) - timeOf(b));
      if (!ok.length && !vms.includes(vm)) continue;
      const last = ok[ok.length - 1];
      chains.push({
        vm,
        points: ok.length,
        fulls: ok.filter((b) => b.status?.type === 'Full').length,
        bytes: ok.reduce((n, b) => n + (b.status?.disks ?? []).reduce((m: number, d: any) => m + (d.size ?? 0), 0), 0),
        ...(last ? { lastPoint: last.metadata.name, lastPointTime: last.status.completionTime } : {}),
      });
    }
    status.chains = chains;
    const lastRun = status.lastScheduleTime && backups.filter((b) => b.metadata.annotations?.[ANN_SCHEDULED] === status.lastScheduleTime);
    if (lastRun?.length && lastRun.every((b: any) => FINISHED.has(b.status?.phase))) {
      const failed = lastRun.filter((b: any) => b.status.phase === 'Failed');
      status.lastResult = failed.length === 0 ? 'Succeeded' : failed.length === lastRun.length ? 'Failed' : 'PartiallyFailed';
      status.lastMessage = failed.length ? failed.map((b: any) => `${b.metadata.name}: ${b.status.message ?? b.status.reason ?? 'failed'}`).join('; ') : `${lastRun.length} backup(s) succeeded`;
    }
    await this.status(p, status);
    return { requeueAfterMs: Math.min(requeue, 3_600_000) };
  }

  /** Creates the run's Backup for one VM (a 409 means a previous controller already did). */
  private async createRun(p: any, vm: string, due: number, backups: any[], now: number): Promise<any | undefined> {
    const ns = p.metadata.namespace;
    const name = backupName(p.metadata.name, vm, due);
    if (backups.some((b) => b.metadata.name === name)) return undefined;
    const mine = backups.filter((b) => b.spec.vm === vm).map(pointOf);
    const decision = decideFull(p.spec.full ?? {}, mine, now);
    const body = {
      apiVersion: 'kubevm.dev/v1alpha1',
      kind: 'Backup',
      metadata: {
        name,
        namespace: ns,
        labels: { [LABEL_VM]: vm, [LABEL_POLICY]: p.metadata.name },
        annotations: { [ANN_SCHEDULED]: iso(due), 'kubevm.dev/type-reason': decision.reason },
      },
      spec: {
        vm,
        policy: p.metadata.name,
        type: decision.type,
        ...(p.spec.disks?.length ? { disks: p.spec.disks } : {}),
        ...(p.spec.target ? { target: p.spec.target } : {}),
        ...(p.spec.bandwidthMiBps ? { bandwidthMiBps: p.spec.bandwidthMiBps } : {}),
      },
    };
    try {
      return await this.kube.create(GVR.backup, ns, body);
    } catch (e) {
      if (isConflict(e)) return undefined;
      throw e;
    }
  }

  private async status(p: any, status: any): Promise<void> {
    if (isDeepStrictEqual(withoutConditionTimes(status), withoutConditionTimes(p.status ?? {}))) return;
    try {
      await this.kube.updateStatus(GVR.backupPolicy, { ...p, status });
    } catch (e) {
      ignoreGone(e);
    }
  }
}

/** A Backup as the schedule and retention logic see it. */
export function pointOf(b: any): PointInfo {
  return {
    name: b.metadata.name,
    time: new Date(timeOf(b)),
    type: b.status?.type ?? b.spec.type ?? 'Incremental',
    base: b.status?.disks?.find((d: any) => d.base)?.base,
    phase: b.status?.phase ?? 'Pending',
  };
}


/**
 * Restores. Into a new Volume: the controller creates the Volume with
 * `source.fromBackup` on the backup's node (the agent's provisioner restores and
 * verifies the checksum) and follows it. In place: handed to the agent of the
 * backup's node (status.node), which refuses while the VM runs.
 */
export class RestoreReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: Caches,
  ) {}

  async reconcile(k: string): Promise<Result | void> {
    const r = this.caches.restores.get(k);
    if (!r || r.metadata.deletionTimestamp) return;
    const ns = r.metadata.namespace;
    const phase = r.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return;
    const fail = (message: string) => this.status(r, { phase: 'Failed', message, completionTime: iso(Date.now()) });
    const b = this.caches.backups.get(`${ns}/${r.spec.backup}`);
    if (!b) return fail(`spec.backup: Backup ${ns}/${r.spec.backup} not found`);
    if (b.status?.phase !== 'Succeeded') {
      if (b.status?.phase === 'Failed') return fail(`spec.backup: Backup ${r.spec.backup} failed; only Succeeded backups restore`);
      await this.status(r, { phase: 'Pending', message: `waiting for Backup ${r.spec.backup} to succeed` });
      return { requeueAfterMs: 2000 };
    }
    const disks: any[] = b.status.disks ?? [];
    const disk = r.spec.disk ?? (disks.length === 1 ? disks[0].name : undefined);
    if (!disk) return fail(`spec.disk: required, Backup ${r.spec.backup} has ${disks.length} disks (${disks.map((d) => d.name).join(', ')})`);
    const point = disks.find((d) => d.name === disk);
    if (!point) return fail(`spec.disk: Backup ${r.spec.backup} has no disk ${JSON.stringify(disk)}`);
    if (!!r.spec.volume === !!r.spec.inPlace) return fail('spec: set exactly one of volume and inPlace');
    if (r.spec.inPlace) {
      if (!phase) await this.status(r, { phase: 'Pending', node: b.status.node, volume: point.volume, message: 'waiting for the node agent', startTime: iso(Date.now()) });
      return; // the agent takes it from here
    }
    const v = this.caches.volumes.get(`${ns}/${r.spec.volume}`);
    if (!v) {
      if (phase) return fail(`Volume ${r.spec.volume} disappeared during the restore`);
      try {
        await this.kube.create(GVR.volume, ns, {
          apiVersion: 'kubevm.dev/v1alpha1',
          kind: 'Volume',
          metadata: { name: r.spec.volume, namespace: ns, labels: { 'kubevm.dev/restored-from': r.spec.backup }, annotations: { 'kubevm.dev/restore': r.metadata.uid } },
          spec: { format: 'qcow2', nodeName: b.status.node, source: { fromBackup: { backup: r.spec.backup, disk } } },
        });
      } catch (e) {
        if (isConflict(e)) return fail(`spec.volume: Volume ${r.spec.volume} already exists`);
        throw e;
      }
      await this.status(r, { phase: 'Running', volume: r.spec.volume, message: `restoring into Volume ${r.spec.volume}`, startTime: iso(Date.now()) });
      return;
    }
    // Only the Volume this Restore made counts.
    if (v.metadata.annotations?.['kubevm.dev/restore'] !== r.metadata.uid) return fail(`spec.volume: Volume ${r.spec.volume} already exists`);
    if (v.status?.phase === 'Ready') return this.status(r, { phase: 'Succeeded', volume: r.spec.volume, checksum: point.checksum, message: 'restored and verified', completionTime: iso(Date.now()) });
    if (v.status?.phase === 'Failed') return fail(`Volume ${r.spec.volume}: ${v.status.message ?? 'failed'}`);
    if (phase !== 'Running') await this.status(r, { phase: 'Running', volume: r.spec.volume, message: `restoring into Volume ${r.spec.volume}`, startTime: iso(Date.now()) });
  }

  private async status(r: any, patch: any): Promise<void> {
    const status = { ...(r.status ?? {}), ...patch };
    if (isDeepStrictEqual(status, r.status ?? {})) return;
    await this.kube.updateStatus(GVR.restore, { ...r, status }).catch(ignoreGone);
  }
}
