import { Kube } from '../runtime/kube';
import { WorkQueue } from '../runtime/queue';
import { Caches, key } from './caches';
import { VmReconciler } from './vm';
import { vcpus, memoryBytes } from './scheduler';
import { VolumeReconciler, NetworkReconciler } from './storage';
import { MountReconciler } from './mounts';
import { BackupReconciler, BackupPolicyReconciler, RestoreReconciler } from './backup';
import { MigrationReconciler } from './migration';

/**
 * The cluster-wide controller: informers for its kinds, one queue and one
 * reconciler per kind, and the wiring that turns a change of one object into
 * the keys of the objects whose decision depends on it.
 */
export interface ControllerOptions {
  log?: (line: string) => void;
  workers?: number;
}

export class Controller {
  readonly caches: Caches;
  readonly vmQueue: WorkQueue;
  readonly volumeQueue: WorkQueue;
  readonly networkQueue: WorkQueue;
  readonly mountQueue: WorkQueue;
  /** The VM each ContainerPathMount targeted when last seen: a changed spec.vm requeues both VMs. */
  private readonly mountTargets = new Map<string, string>();
  readonly backupQueue: WorkQueue;
  readonly policyQueue: WorkQueue;
  readonly restoreQueue: WorkQueue;
  readonly migrationQueue: WorkQueue;
  readonly policies: BackupPolicyReconciler;

  constructor(
    readonly kube: Kube,
    opts: ControllerOptions = {},
  ) {
    const log = opts.log ?? (() => {});
    this.caches = new Caches(kube, (spec) => ({ cpu: vcpus(spec), mem: memoryBytes(spec) }));
    const vms = new VmReconciler(kube, this.caches);
    const volumes = new VolumeReconciler(kube, this.caches);
    const networks = new NetworkReconciler(kube, this.caches);
    this.vmQueue = new WorkQueue('vm', (k) => vms.reconcile(k), opts.workers ?? 4, log);
    this.volumeQueue = new WorkQueue('volume', (k) => volumes.reconcile(k), 2, log);
    this.networkQueue = new WorkQueue('network', (k) => networks.reconcile(k), 2, log);
    const mounts = new MountReconciler(kube, this.caches);
    this.mountQueue = new WorkQueue('containerpathmount', (k) => mounts.reconcile(k), 2, log);
    const backups = new BackupReconciler(kube, this.caches);
    this.policies = new BackupPolicyReconciler(kube, this.caches);
    const restores = new RestoreReconciler(kube, this.caches);
    this.backupQueue = new WorkQueue('backup', (k) => backups.reconcile(k), 2, log);
    this.policyQueue = new WorkQueue('backuppolicy', (k) => this.policies.reconcile(k), 2, log);
    this.restoreQueue = new WorkQueue('restore', (k) => restores.reconcile(k), 2, log);
    const migrations = new MigrationReconciler(kube, this.caches);
    this.migrationQueue = new WorkQueue('migration', (k) => migrations.reconcile(k), 2, log);
    const requeueMigrations = (ns: string, vm?: string, node?: string) => {
      for (const m of this.caches.migrations.list())
        if ((m.metadata.namespace === ns && m.spec?.vm === vm) || (node && (m.status?.sourceNode === node || m.status?.targetNode === node))) this.migrationQueue.add(key(m));
    };

    const onVm = (o: any) => {
      this.vmQueue.add(key(o));
      this.requeueMountsOf(o.metadata.namespace, o.metadata.name);
      for (const p of this.caches.backupPolicies.list()) if (p.metadata.namespace === o.metadata.namespace) this.policyQueue.add(key(p));
      for (const d of o.spec?.disks ?? []) this.volumeQueue.add(`${o.metadata.namespace}/${d.volume}`);
    };
    for (const ev of ['add', 'update', 'delete'] as const) {
      this.caches.vms.inf.on(ev, onVm);
      this.caches.vmis.inf.on(ev, (o: any) => {
        this.vmQueue.add(key(o)); // an instance has its VM's name
        this.requeueMountsOf(o.metadata.namespace, o.metadata.name);
        for (const i of o.spec?.interfaces ?? []) this.networkQueue.add(`${o.metadata.namespace}/${i.network}`);
      });
      this.caches.volumes.inf.on(ev, (o: any) => {
        this.volumeQueue.add(key(o));
        this.requeueVmsIn(o.metadata.namespace);
        for (const b of this.caches.backups.list()) if (b.metadata.namespace === o.metadata.namespace && !b.status?.phase) this.backupQueue.add(key(b));
        for (const r of this.caches.restores.list()) if (r.metadata.namespace === o.metadata.namespace && r.status?.volume === o.metadata.name) this.restoreQueue.add(key(r));
      });
      this.caches.mounts.inf.on(ev, (o: any) => {
        const k = key(o);
        this.mountQueue.add(k);
        const before = this.mountTargets.get(k);
        if (before && before !== o.spec?.vm) this.vmQueue.add(`${o.metadata.namespace}/${before}`);
        if (o.spec?.vm) this.vmQueue.add(`${o.metadata.namespace}/${o.spec.vm}`);
        if (ev === 'delete') this.mountTargets.delete(k);
        else this.mountTargets.set(k, o.spec?.vm);
        // A tag conflict is decided among all mounts of a VM: the others may change too.
        this.requeueMountsOf(o.metadata.namespace, o.spec?.vm);
      });
      this.caches.networks.inf.on(ev, (o: any) => {
        this.networkQueue.add(key(o));
        this.requeueVmsIn(o.metadata.namespace);
      });
      this.caches.backupPolicies.inf.on(ev, (o: any) => this.policyQueue.add(key(o)));
      this.caches.backups.inf.on(ev, (o: any) => {
        this.backupQueue.add(key(o));
        for (const v of this.caches.volumes.list())
          if (v.metadata.namespace === o.metadata.namespace && v.spec?.source?.fromBackup?.backup === o.metadata.name && !v.status?.nodeName) this.volumeQueue.add(key(v));
        if (o.spec?.policy) this.policyQueue.add(`${o.metadata.namespace}/${o.spec.policy}`);
        // A Filesystem volume is placed by, and protected while holding, the Backups that target it.
        if (o.spec?.target?.volume) this.volumeQueue.add(`${o.metadata.namespace}/${o.spec.target.volume}`);
        for (const r of this.caches.restores.list()) if (r.metadata.namespace === o.metadata.namespace && r.spec?.backup === o.metadata.name) this.restoreQueue.add(key(r));
      });
      this.caches.restores.inf.on(ev, (o: any) => this.restoreQueue.add(key(o)));
      this.caches.migrations.inf.on(ev, (o: any) => {
        this.migrationQueue.add(key(o));
        this.vmQueue.add(`${o.metadata.namespace}/${o.spec?.vm}`);
      });
      this.caches.vmis.inf.on(ev, (o: any) => requeueMigrations(o.metadata.namespace, o.metadata.name));
      this.caches.backups.inf.on(ev, (o: any) => requeueMigrations(o.metadata.namespace, o.spec?.vm));
      this.caches.nodes.inf.on(ev, (o: any) => requeueMigrations('', undefined, o.metadata.name));
      this.caches.nodes.inf.on(ev, () => {
        // Unplaced work may fit now.
        for (const vm of this.caches.vms.list()) if (!this.caches.vmis.get(key(vm))) this.vmQueue.add(key(vm));
        for (const v of this.caches.volumes.list()) if (!v.status?.nodeName) this.volumeQueue.add(key(v));
      });
    }
  }

  private requeueMountsOf(ns: string, vm: string | undefined): void {
    if (!vm) return;
    for (const [k, target] of this.mountTargets) if (target === vm && k.startsWith(`${ns}/`)) this.mountQueue.add(k);
  }

  private requeueVmsIn(ns: string): void {
    for (const vm of this.caches.vms.list()) if (vm.metadata.namespace === ns) this.vmQueue.add(key(vm));
  }

  async start(): Promise<void> {
    await this.caches.start();
  }

  async stop(): Promise<void> {
    for (const q of [this.vmQueue, this.volumeQueue, this.networkQueue, this.mountQueue, this.backupQueue, this.policyQueue, this.restoreQueue, this.migrationQueue]) q.stop();
    await this.caches.stop();
  }
}
