import * as fs from 'node:fs';
import * as path from 'node:path';
import { GVR, Kube } from '../runtime/kube';
import { WorkQueue, type Result } from '../runtime/queue';
import { Store, key } from '../controller/caches';
import { ANN_MERGE_FROM, ANN_MERGE_ONTO, BACKUP_FILES } from '../controller/backup';
import { recordEvent } from '../controller/events';
import { confinePath } from '../hal/common/paths';
import { ignoreGone, setCondition, removeCondition, patchStatus } from '../runtime/status';
import type { Backend, BackupResult, DiskSpec } from '../hal/types';
import { isFilesystem } from '../controller/storage';
import { parseQuantity } from '../controller/scheduler';
import { dirUsage } from './volumes';

/** Bytes a file takes on disk (allocated blocks); 0 when it is not there. */
function allocated(p: string): number {
  try {
    return fs.statSync(p).blocks * 512;
  } catch {
    return 0;
  }
}

/**
 * The agent's half of backups and in-place restores (docs/backup.md).
 *
 * Runs the Backups the controller handed to this node (status.node), one per
 * VM at a time: online through the backend while the VM runs here (a
 * point-in-time copy by QEMU, changed blocks only for an Incremental), offline
 * from the volume files while it is stopped — and then no instance of that VM
 * starts until the backup ends (see `busy`). A Backup turns Succeeded only
 * after every disk's point and manifest are complete. After an agent restart, a
 * Backup left Running is failed (reason Interrupted), its partial files are
 * removed, and the next backup of that VM is full. Deleting a Backup removes its
 * files, unless another Backup builds on it.
 */
export interface BackupRunnerOptions {
  nodeName: string;
  /** Default root for backup points when a Backup sets no target. */
  backupDir: string;
  allowedRoots: string[];
  /** The node's backend (capability backup-cbt): live backups through it, offline ones from the files. */
  backend: Backend;
  log?: (line: string) => void;
  /** A Filesystem volume's content changed (a backup written to it or deleted from it): its usage is stale. */
  onTargetChanged?: (volumeKey: string) => void;
}

/** A Backup that cannot run as specified; `reason` goes to its status. */
class BackupSpecError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

/** Which chain directory family a Backup writes to: its target volume or path (or the default). */
function targetKey(b: any): string {
  const t = b.spec?.target ?? {};
  return t.volume ? `volume:${t.volume}` : `path:${t.path ?? ''}`;
}

/** Sizes in messages: KiB below 100 MiB (so near-full volumes read exactly), MiB above. */
function mib(n: number): string {
  return n < 100 * (1 << 20) ? `${Math.ceil(n / 1024)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** A point's files, from its manifest path (`<id>.json` beside `<id>.qcow2` and `<id>.sums`). */
export function removePoint(manifest: string): void {
  const stem = manifest.replace(/\.json$/, '');
  for (const f of [`${stem}.qcow2`, `${stem}.sim`, `${stem}.sums`, manifest, `${manifest}.tmp`]) fs.rmSync(f, { force: true });
}

const COMPONENT = (node: string) => `kubevm-agent/${node}`;

export class BackupRunner {
  readonly backups: Store;
  readonly restores: Store;
  readonly queue: WorkQueue;
  /** VM key → what holds it (a backup or restore name). */
  private readonly locks = new Map<string, string>();
  /** Backup/restore keys this process is running. */
  private readonly active = new Set<string>();
  /** Aborts the data copy of running backups when this runner stops (an agent restart). */
  private readonly aborts = new Map<string, AbortController>();
  private stopped = false;
  private readonly log: (line: string) => void;

  constructor(
    private readonly kube: Kube,
    private readonly opts: BackupRunnerOptions,
    private readonly vmis: Store,
    private readonly volumes: Store,
    /** Is the instance with this uid running on this node's backend right now? */
    private readonly running: (uid: string) => boolean,
  ) {
    this.log = opts.log ?? (() => {});
    this.backups = new Store(kube.informer(GVR.backup));
    this.restores = new Store(kube.informer(GVR.restore));
    this.queue = new WorkQueue(`backups/${opts.nodeName}`, (k) => (k.startsWith('r:') ? this.reconcileRestore(k.slice(2)) : this.reconcileBackup(k.slice(2))), 4, this.log);
    for (const ev of ['add', 'update', 'delete'] as const) {
      this.backups.inf.on(ev, (o: any) => {
        if (o.status?.node === opts.nodeName) this.queue.add(`b:${key(o)}`);
        // A deletion blocked by this backup's dependents may proceed now.
        for (const b of this.backups.list()) if (b.metadata.deletionTimestamp && b.status?.node === opts.nodeName) this.queue.add(`b:${key(b)}`);
      });
      this.restores.inf.on(ev, (o: any) => {
        if (o.status?.node === opts.nodeName) this.queue.add(`r:${key(o)}`);
      });
    }
  }

  async start(): Promise<void> {
    await this.backups.inf.start();
    await this.restores.inf.start();
  }

  async stop(): Promise<void> {
    // A stopping agent leaves no half-done work behind as Succeeded: its successor fails what was Running.
    this.stopped = true;
    for (const a of this.aborts.values()) a.abort();
    this.queue.stop();
    await this.backups.inf.stop();
    await this.restores.inf.stop();
  }

  /** A backup or restore holds the VM: its instance must not start now. */
  busy(vmKey: string): string | undefined {
    return this.locks.get(vmKey);
  }

  private async event(obj: any, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    await recordEvent(this.kube, obj, type, reason, message, COMPONENT(this.opts.nodeName));
  }

  // ---- backups ------------------------------------------------------------------------

  /** The chain's directory: <target or backupDir>/<namespace>/<vm>/<policy|on-demand>/ (each disk's points in <disk>/). */
  private vmDir(b: any): string {
    let root = this.opts.backupDir;
    if (b.spec.target?.volume) root = this.targetVolume(b).status.path;
    else if (b.spec.target?.path) {
      try {
        root = confinePath(b.spec.target.path, { allowedRoots: this.opts.allowedRoots });
      } catch (e) {
        throw new Error(`spec.target.path: ${(e as Error).message}`);
      }
    }
    // One directory per chain (policy, or on-demand): chains keep their own points and dirty bitmaps.
    return path.join(root, b.metadata.namespace, b.spec.vm, b.spec.policy || 'on-demand');
  }

  /** The Ready Filesystem volume a Backup targets on this node; throws BackupSpecError otherwise. */
  private targetVolume(b: any): any {
    const name = b.spec.target.volume;
    const v = this.volumes.get(`${b.metadata.namespace}/${name}`);
    if (!v) throw new BackupSpecError('InvalidSpec', `spec.target.volume: Volume ${name} not found`);
    if (!isFilesystem(v)) throw new BackupSpecError('InvalidSpec', `spec.target.volume: Volume ${name} has volumeMode ${v.spec?.volumeMode ?? 'Block'}; backups need a Filesystem volume`);
    if (v.status?.nodeName !== this.opts.nodeName)
      throw new BackupSpecError('InvalidSpec', `spec.target.volume: Volume ${name} is on node ${v.status?.nodeName ?? '(none yet)'}, not on ${this.opts.nodeName}, which backs VirtualMachine ${b.spec.vm} up`);
    if (v.status?.phase !== 'Ready' || !v.status.path) throw new BackupSpecError('InvalidSpec', `spec.target.volume: Volume ${name} is ${v.status?.phase ?? 'Pending'}, not Ready`);
    return v;
  }

  /**
   * Refuses a backup that would not fit in its target volume's capacity
   * (spec.size). Returns the volume's usage and capacity before the backup.
   */
  private checkCapacity(b: any, type: 'Full' | 'Incremental', disks: { path: string }[]): { used: number; cap: number } | undefined {
    if (!b.spec.target?.volume) return undefined;
    const v = this.targetVolume(b);
    const cap = Math.ceil(parseQuantity(v.spec.size));
    const used = dirUsage(v.status.path);
    // A Full holds about the disks' allocated data; an incremental's size is not known before it runs.
    const need = type === 'Full' ? disks.reduce((n, d) => n + allocated(d.path), 0) : 0;
    if (used + need > cap || used >= cap)
      throw new BackupSpecError(
        'TargetFull',
        `spec.target.volume: Volume ${v.metadata.name} holds ${mib(used)} of its ${mib(cap)} (spec.size)` +
          (type === 'Full' ? `; this Full backup needs about ${mib(need)} more (the disks' allocated data)` : '; it is full') +
          ': delete Backups, tighten the policy\'s retention, or use a larger volume',
      );
    return { used, cap };
  }

  /** Backups of the same chain: same VM, same policy (or none), same target. */
  private chainOf(b: any): any[] {
    const out: any[] = [];
    for (const o of this.backups.list())
      if (
        o.metadata.uid !== b.metadata.uid &&
        o.metadata.namespace === b.metadata.namespace &&
        o.spec.vm === b.spec.vm &&
        (o.spec.policy ?? '') === (b.spec.policy ?? '') &&
        targetKey(o) === targetKey(b)
      )
        out.push(o);
    return out;
  }

  private async reconcileBackup(k: string): Promise<Result | void> {
    const b = this.backups.get(k);
    if (!b || b.status?.node !== this.opts.nodeName) return;
    if (b.metadata.deletionTimestamp) return this.removeBackup(b);
    const phase = b.status?.phase;
    if (phase === 'Running' && !this.active.has(k)) {
      // Left Running by a previous agent process: the partial points are not trusted.
      this.removePartial(b);
      await this.event(b, 'Warning', 'Interrupted', 'the node agent restarted during the backup; partial files removed');
      await this.setStatus(b, { phase: 'Failed', reason: 'Interrupted', message: 'the node agent restarted during the backup; partial files removed (the next backup builds on the last Succeeded point)', completionTime: new Date().toISOString() });
      return;
    }
    if (phase === 'Succeeded' && b.metadata.annotations?.[ANN_MERGE_FROM] !== undefined) return this.mergeInto(b);
    if (phase !== 'Pending') return;
    const tv = b.spec.target?.volume ? this.volumes.get(`${b.metadata.namespace}/${b.spec.target.volume}`) : undefined;
    if (b.spec.target?.volume && tv?.status?.phase !== 'Ready' && tv?.status?.phase !== 'Failed') {
      await this.setStatus(b, { message: `waiting for Volume ${b.spec.target.volume} (spec.target.volume) to be Ready on this node` });
      return { requeueAfterMs: 1000 };
    }
    const vmKey = `${b.metadata.namespace}/${b.spec.vm}`;
    const holder = this.locks.get(vmKey);
    if (holder) {
      await this.setStatus(b, { message: `waiting: ${holder} holds VirtualMachine ${b.spec.vm}` });
      return { requeueAfterMs: 1000 };
    }
    const vmi = this.vmis.get(vmKey);
    const active = vmi && !['Succeeded', 'Failed'].includes(vmi.status?.phase);
    if (active && vmi.spec?.nodeName && vmi.spec.nodeName !== this.opts.nodeName) {
      // The VM runs elsewhere now (a live migration moved it): an offline copy here would race the running VM.
      await this.setStatus(b, { phase: undefined, node: undefined, message: `VirtualMachine ${b.spec.vm} runs on node ${vmi.spec.nodeName}: handed back to the controller` });
      return;
    }
    const live = active && vmi.spec?.nodeName === this.opts.nodeName;
    const ms = vmi?.status?.migrationState;
    if (live && ms && !ms.completed && !ms.failed && !ms.endTime) {
      await this.setStatus(b, { message: `waiting: VirtualMachine ${b.spec.vm} is migrating (Migration ${ms.migration})` });
      return { requeueAfterMs: 1000 };
    }
    const online = live && this.running(vmi.metadata.uid);
    if (live && !online) {
      await this.setStatus(b, { message: 'waiting: the VM is starting or stopping' });
      return { requeueAfterMs: 1000 };
    }
    this.locks.set(vmKey, `Backup ${b.metadata.name}`);
    this.active.add(k);
    const started = Date.now();
    try {
      let plan: Awaited<ReturnType<BackupRunner['plan']>>;
      try {
        plan = await this.plan(b, online ? vmi : undefined);
      } catch (e) {
        const reason = e instanceof BackupSpecError ? e.reason : 'InvalidSpec';
        await this.event(b, 'Warning', reason, (e as Error).message);
        await this.setStatus(b, { phase: 'Failed', reason, message: (e as Error).message, completionTime: new Date().toISOString() });
        return;
      }
      const running = {
        phase: 'Running',
        type: plan.type,
        reason: plan.reason,
        online: !!online,
        startTime: new Date(started).toISOString(),
        message: `${plan.type} backup ${online ? 'of the running VM' : 'of the stopped VM (offline)'}`,
        disks: plan.disks.map((d) => ({ name: d.name, volume: d.volume, path: path.join(plan.dir, d.name, `${plan.pointId}.qcow2`), manifest: path.join(plan.dir, d.name, `${plan.pointId}.json`) })),
      };
      if (!(await this.setStatus(b, running, true))) return;
      let result: BackupResult;
      try {
        const source = online
          ? { uid: vmi.metadata.uid as string }
          : { offline: { disks: plan.disks.map((d): DiskSpec => ({ name: d.name, path: d.path, format: d.format, bus: 'virtio', changeTracking: true })), vm: { name: b.spec.vm } } };
        const abort = new AbortController();
        this.aborts.set(k, abort);
        result = await this.opts.backend.backup(source, {
          signal: abort.signal,
          targetDir: plan.dir,
          type: plan.type,
          disks: plan.disks.map((d) => d.name),
          ...(plan.type === 'Incremental' ? { base: Object.fromEntries(plan.disks.map((d) => [d.name, d.baseManifest!])) } : {}),
          pointId: plan.pointId,
          otherChains: plan.otherChains,
          ...(b.spec.bandwidthMiBps ? { bytesPerSecond: b.spec.bandwidthMiBps * 1024 * 1024 } : {}),
        });
      } catch (e) {
        // The data path removes what it wrote; a point without a manifest does not exist anyway.
        const cur = this.backups.get(k) ?? b;
        await this.event(cur, 'Warning', 'BackupFailed', (e as Error).message);
        await this.setStatus(cur, { phase: 'Failed', reason: 'BackupFailed', message: (e as Error).message, completionTime: new Date().toISOString(), durationSeconds: (Date.now() - started) / 1000 });
        return;
      }
      const cur = this.backups.get(k) ?? b;
      const type = result.disks.some((d) => d.type === 'Full') ? 'Full' : 'Incremental';
      const disks = result.disks.map((r) => {
        const d = plan.disks.find((x) => x.name === r.disk)!;
        return {
          name: r.disk,
          volume: d.volume,
          path: r.file,
          manifest: r.point,
          size: r.size,
          virtualSize: r.virtualSize,
          checksum: r.checksum,
          ...(r.type === 'Incremental' && plan.base ? { base: plan.base, baseManifest: r.base ?? d.baseManifest } : {}),
        };
      });
      // A Backup is one point in time: when any disk had to start over, the point counts as Full.
      const halReason = result.disks.find((d) => d.reason)?.reason;
      const reason = plan.type === 'Incremental' && type === 'Full' ? halReason : plan.reason;
      const status: any = {
        phase: 'Succeeded',
        type,
        reason,
        message: `${type} backup of ${disks.length} disk(s) (${result.mode}), ${disks.reduce((n, d) => n + (d.size ?? 0), 0)} bytes`,
        // Millisecond times: points of one chain are ordered by them.
        startTime: new Date(result.startedAt).toISOString(),
        completionTime: new Date().toISOString(),
        durationSeconds: (Date.now() - started) / 1000,
        disks,
      };
      setCondition(status, 'Complete', 'True', 'PointsWritten', 'every point and its manifest are written and checksummed', Date.now());
      await this.setStatus(cur, status);
      await this.event(cur, 'Normal', 'BackupSucceeded', status.message + (reason ? ` (${reason})` : ''));
      if (plan.target) {
        // Usage before plus what was written (the provisioner measures it again for the volume's status).
        const used = plan.target.used + disks.reduce((n, d) => n + (d.size ?? 0), 0);
        if (used > plan.target.cap)
          await this.event(cur, 'Warning', 'TargetOverCapacity', `Volume ${b.spec.target.volume} now holds ${mib(used)} of its ${mib(plan.target.cap)}: the next backups to it are refused until retention or deletions free space`);
      }
    } finally {
      this.aborts.delete(k);
      this.active.delete(k);
      this.locks.delete(vmKey);
      if (b.spec.target?.volume) this.opts.onTargetChanged?.(`${b.metadata.namespace}/${b.spec.target.volume}`);
    }
  }

  /**
   * Retention asked to fold older points into this one (annotations from the
   * policy controller): per disk the HAL rebases the point onto the new base
   * (or makes it self-contained), then the status says so, and the folded
   * Backups, no longer a base of anything, are deleted by the controller.
   * Runs under the VM's lock (no backup reads the chain meanwhile); a merge
   * interrupted by a restart is repeated (the HAL's merge is repeatable).
   */
  private async mergeInto(b: any): Promise<Result | void> {
    const ns = b.metadata.namespace;
    const from = String(b.metadata.annotations[ANN_MERGE_FROM]).split(',').filter(Boolean);
    const ontoName: string = b.metadata.annotations[ANN_MERGE_ONTO] ?? '';
    const done: string[] = b.status.mergedFrom ?? [];
    if (from.every((f) => done.includes(f))) return;
    const vmKey = `${ns}/${b.spec.vm}`;
    const holder = this.locks.get(vmKey);
    if (holder) return { requeueAfterMs: 1000 };
    const onto = ontoName ? this.backups.get(`${ns}/${ontoName}`) : undefined;
    const fail = async (message: string): Promise<Result> => {
      const status = JSON.parse(JSON.stringify(b.status));
      setCondition(status, 'Merged', 'False', 'MergeFailed', message, Date.now());
      if (JSON.stringify(status) !== JSON.stringify(b.status)) {
        await this.event(b, 'Warning', 'MergeFailed', message);
        await this.setStatus(b, { conditions: status.conditions });
      }
      return { requeueAfterMs: 30_000 };
    };
    if (ontoName && onto?.status?.phase !== 'Succeeded') return fail(`merge onto Backup ${ontoName}: it is not a Succeeded backup`);
    const k = `${ns}/${b.metadata.name}`;
    this.locks.set(vmKey, `merge into Backup ${b.metadata.name}`);
    this.active.add(k);
    try {
      const disks: any[] = [];
      const merged = new Set<string>(done);
      let type = b.status.type;
      for (const d of b.status.disks ?? []) {
        const base = onto ? (onto.status.disks ?? []).find((x: any) => x.name === d.name) : undefined;
        if (onto && !base?.manifest) return await fail(`merge onto Backup ${ontoName}: it has no point of disk ${d.name}`);
        const r = await this.opts.backend.mergeBackup({ point: d.manifest, ...(base ? { onto: base.manifest } : {}) });
        r.mergedFrom.forEach((id) => merged.add(id));
        type = r.type;
        const next = { ...d, size: r.size };
        if (base) Object.assign(next, { base: ontoName, baseManifest: base.manifest });
        else {
          delete next.base;
          delete next.baseManifest;
        }
        disks.push(next);
      }
      // The Backup names of the folded points (pointIds are Backup names, or their uid when too long).
      for (const f of from) merged.add(f);
      const status = JSON.parse(JSON.stringify(b.status));
      const message = `folded ${from.join(', ')} into this point (now ${ontoName ? `based on ${ontoName}` : 'self-contained'})`;
      setCondition(status, 'Merged', 'True', 'Merged', message, Date.now());
      const cur = this.backups.get(k) ?? b;
      await this.setStatus(cur, { type, disks, mergedFrom: [...merged].sort(), conditions: status.conditions });
      await this.event(cur, 'Normal', 'Merged', message);
      if (b.spec.target?.volume) this.opts.onTargetChanged?.(`${ns}/${b.spec.target.volume}`);
    } catch (e) {
      return fail((e as Error).message);
    } finally {
      this.active.delete(k);
      this.locks.delete(vmKey);
    }
  }

  /** What to back up and on which base. */
  private async plan(b: any, vmi: any | undefined) {
    const ns = b.metadata.namespace;
    const names: string[] = b.spec.disks ?? [];
    // The disks as the running instance has them, else as the VM declares them.
    const source: any[] = vmi ? vmi.spec.disks ?? [] : await this.vmDisks(ns, b.spec.vm);
    const chosen = names.length ? names.map((n) => source.find((d) => d.name === n)).filter(Boolean) : source.filter((d) => !d.readOnly);
    if (names.length && chosen.length !== names.length) throw new Error(`spec.disks: VirtualMachine ${b.spec.vm} has no disk ${names.find((n) => !source.some((d) => d.name === n))}`);
    if (!chosen.length) throw new Error(`VirtualMachine ${b.spec.vm} has no writable disk to back up`);

    let type: 'Full' | 'Incremental' = b.spec.type === 'Full' ? 'Full' : 'Incremental';
    let reason: string | undefined = b.spec.type === 'Full' ? b.metadata.annotations?.['kubevm.dev/type-reason'] ?? 'Requested' : undefined;
    const chain = this.chainOf(b);
    const finished = chain
      .filter((o) => ['Succeeded', 'Failed'].includes(o.status?.phase) && !o.metadata.deletionTimestamp)
      .sort((x, y) => Date.parse(y.status.completionTime ?? 0) - Date.parse(x.status.completionTime ?? 0));
    const base = finished.find((o) => o.status.phase === 'Succeeded');
    // A failed or interrupted run changes nothing: the base's bitmap still counts every change since the base.
    if (type === 'Incremental' && !base) [type, reason] = ['Full', 'NoBase'];
    const disks = chosen.map((d) => {
      const v = this.volumes.get(`${ns}/${d.volume}`);
      if (!v?.status?.path) throw new Error(`disk ${d.name}: Volume ${d.volume} has no file on this node`);
      const basePoint = type === 'Incremental' ? (base.status.disks ?? []).find((x: any) => x.name === d.name) : undefined;
      if (type === 'Incremental' && !basePoint?.manifest) [type, reason] = ['Full', 'NoBaseForDisk'];
      return {
        name: d.name as string,
        volume: d.volume as string,
        path: v.status.path as string,
        format: (v.spec.format ?? 'qcow2') as 'qcow2' | 'raw',
        baseManifest: basePoint?.manifest as string | undefined,
      };
    });
    const target = this.checkCapacity(b, type, disks);
    const pointId = b.metadata.name.length <= 100 ? b.metadata.name : b.metadata.uid;
    // Other chains of this VM (other policies, on-demand): their bitmaps must survive this point.
    const dir = this.vmDir(b);
    const otherChains = [
      ...new Set(
        [...this.backups.list()]
          .filter((o) => o.metadata.namespace === ns && o.spec.vm === b.spec.vm && o.status?.phase === 'Succeeded')
          .map((o) => {
            try {
              return this.vmDir(o);
            } catch {
              return undefined; // a target outside the allowed roots never got points
            }
          })
          .filter((d): d is string => !!d && d !== dir),
      ),
    ];
    return { type, reason, disks, dir, otherChains, pointId, target, base: type === 'Incremental' ? (base.metadata.name as string) : undefined };
  }

  private async vmDisks(ns: string, vm: string): Promise<any[]> {
    const obj = await this.kube.tryGet(GVR.vm, ns, vm);
    if (!obj) throw new Error(`spec.vm: VirtualMachine ${ns}/${vm} not found`);
    return obj.spec?.disks ?? [];
  }

  /** Files of a Backup that never completed (the data path writes manifests last; remove what is there). */
  private removePartial(b: any): void {
    for (const d of b.status?.disks ?? []) if (d.manifest) removePoint(d.manifest);
  }

  private async removeBackup(b: any): Promise<Result | void> {
    const fin: string[] = b.metadata.finalizers ?? [];
    if (!fin.includes(BACKUP_FILES)) return;
    if (this.active.has(`${b.metadata.namespace}/${b.metadata.name}`)) return { requeueAfterMs: 1000 };
    const dependents = [...this.backups.list()].filter(
      (o) => o.metadata.namespace === b.metadata.namespace && !o.metadata.deletionTimestamp && (o.status?.disks ?? []).some((d: any) => d.base === b.metadata.name),
    );
    if (dependents.length) {
      const message = `deletion waits: ${dependents.map((o) => `Backup ${o.metadata.name}`).sort().join(', ')} build(s) on this point`;
      const status = JSON.parse(JSON.stringify(b.status ?? {}));
      setCondition(status, 'DeletionBlocked', 'True', 'HasDependents', message, Date.now());
      if (JSON.stringify(status) !== JSON.stringify(b.status)) await this.kube.updateStatus(GVR.backup, { ...b, status }).catch(ignoreGone);
      return { requeueAfterMs: 5000 };
    }
    for (const d of b.status?.disks ?? []) if (d.manifest) removePoint(d.manifest);
    if (b.spec.target?.volume) this.opts.onTargetChanged?.(`${b.metadata.namespace}/${b.spec.target.volume}`);
    await this.kube
      .mergePatch(GVR.backup, b.metadata.namespace, b.metadata.name, { metadata: { finalizers: fin.filter((f) => f !== BACKUP_FILES), resourceVersion: b.metadata.resourceVersion } })
      .catch(ignoreGone);
  }

  // ---- in-place restores ---------------------------------------------------------------

  private async reconcileRestore(k: string): Promise<Result | void> {
    const r = this.restores.get(k);
    if (!r || r.status?.node !== this.opts.nodeName || r.metadata.deletionTimestamp || !r.spec.inPlace) return;
    const fail = async (message: string): Promise<void> => {
      await this.setRestore(r, { phase: 'Failed', message, completionTime: new Date().toISOString() });
    };
    if (r.status.phase === 'Running' && !this.active.has(`r:${k}`)) return fail('the node agent restarted during the restore; the disk was not changed (restores write a new file and rename it over the old one)');
    if (r.status.phase !== 'Pending') return;
    const ns = r.metadata.namespace;
    const b = this.backups.get(`${ns}/${r.spec.backup}`);
    const point = (b?.status?.disks ?? []).find((d: any) => d.name === (r.spec.disk ?? b?.status?.disks?.[0]?.name));
    if (!b || !point) return fail(`spec.backup: Backup ${r.spec.backup} (disk ${r.spec.disk ?? '-'}) not found`);
    const vmName = b.spec.vm;
    const vmKey = `${ns}/${vmName}`;
    const holder = this.locks.get(vmKey);
    if (holder) return { requeueAfterMs: 1000 };
    const vmi = this.vmis.get(vmKey);
    if (vmi && !['Succeeded', 'Failed'].includes(vmi.status?.phase))
      return fail(`VirtualMachine ${vmName} is running (instance phase ${vmi.status?.phase ?? 'Pending'}): stop it first (runStrategy: Halted), then restore in place`);
    const v = this.volumes.get(`${ns}/${point.volume}`);
    if (!v?.status?.path || v.status.nodeName !== this.opts.nodeName) return fail(`Volume ${point.volume} has no file on node ${this.opts.nodeName}`);
    this.locks.set(vmKey, `Restore ${r.metadata.name}`);
    this.active.add(`r:${k}`);
    try {
      if (!(await this.setRestore(r, { phase: 'Running', volume: point.volume, message: `restoring ${point.name} of Backup ${b.metadata.name} onto Volume ${point.volume}` }))) return;
      // Written beside the disk and renamed over it once verified; the disk's bitmaps go with the old content.
      const res = await this.opts.backend.restore({ point: point.manifest, dest: v.status.path, format: (v.spec.format ?? 'qcow2') as 'qcow2' | 'raw', inPlace: true });
      const cur = this.restores.get(k) ?? r;
      await this.setRestore(cur, { phase: 'Succeeded', checksum: res.checksum, message: 'restored and verified', completionTime: new Date().toISOString() });
      await this.event(cur, 'Normal', 'Restored', `Volume ${point.volume} restored from Backup ${b.metadata.name} (checksum ${res.checksum.slice(0, 22)}…)`);
    } catch (e) {
      await fail((e as Error).message);
    } finally {
      this.active.delete(`r:${k}`);
      this.locks.delete(vmKey);
    }
  }

  // ---- status --------------------------------------------------------------------------

  /** Writes a Backup status patch; with `exclusive`, false when another writer won (the caller then stops). */
  private async setStatus(b: any, patch: any, exclusive = false): Promise<boolean> {
    if (this.stopped) return false;
    const status = { ...(b.status ?? {}), ...patch };
    for (const k of Object.keys(status)) if (status[k] === undefined) delete status[k];
    if (JSON.stringify(status) === JSON.stringify(b.status ?? {})) return true;
    // A new phase clears a deletion that was blocked by this point's dependents.
    if (patch.phase && patch.phase !== 'Pending' && (b.status?.conditions ?? []).some((c: any) => c.type === 'DeletionBlocked')) {
      removeCondition(status, 'DeletionBlocked');
      patch = { ...patch, conditions: status.conditions };
    }
    // Exclusive (taking a Pending backup): a conflict means another writer won, so no retry.
    const ok = await patchStatus(this.kube, GVR.backup, b, patch, { attempts: exclusive ? 1 : 2 });
    return ok || !exclusive;
  }

  private async setRestore(r: any, patch: any): Promise<boolean> {
    return !this.stopped && patchStatus(this.kube, GVR.restore, r, patch);
  }
}
