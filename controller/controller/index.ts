import { Kube } from '../runtime/kube';
import { WorkQueue } from '../runtime/queue';
import { Caches, key } from './caches';
import { VmReconciler } from './vm';
import { vcpus, memoryBytes } from './scheduler';
import { VolumeReconciler, NetworkReconciler } from './storage';

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

    const onVm = (o: any) => {
      this.vmQueue.add(key(o));
      for (const d of o.spec?.disks ?? []) this.volumeQueue.add(`${o.metadata.namespace}/${d.volume}`);
    };
    for (const ev of ['add', 'update', 'delete'] as const) {
      this.caches.vms.inf.on(ev, onVm);
      this.caches.vmis.inf.on(ev, (o: any) => {
        this.vmQueue.add(key(o)); // an instance has its VM's name
        for (const i of o.spec?.interfaces ?? []) this.networkQueue.add(`${o.metadata.namespace}/${i.network}`);
      });
      this.caches.volumes.inf.on(ev, (o: any) => {
        this.volumeQueue.add(key(o));
        this.requeueVmsIn(o.metadata.namespace);
      });
      this.caches.networks.inf.on(ev, (o: any) => {
        this.networkQueue.add(key(o));
        this.requeueVmsIn(o.metadata.namespace);
      });
      this.caches.nodes.inf.on(ev, () => {
        // Unplaced work may fit now.
        for (const vm of this.caches.vms.list()) if (!this.caches.vmis.get(key(vm))) this.vmQueue.add(key(vm));
        for (const v of this.caches.volumes.list()) if (!v.status?.nodeName) this.volumeQueue.add(key(v));
      });
    }
  }

  private requeueVmsIn(ns: string): void {
    for (const vm of this.caches.vms.list()) if (vm.metadata.namespace === ns) this.vmQueue.add(key(vm));
  }

  async start(): Promise<void> {
    await this.caches.start();
  }

  async stop(): Promise<void> {
    for (const q of [this.vmQueue, this.volumeQueue, this.networkQueue]) q.stop();
    await this.caches.stop();
  }
}
