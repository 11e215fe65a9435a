import type { Informer, ObjectCache } from '@kubernetes/client-node';
import { GVR, Kube } from '../runtime/kube';

/** Informer-backed caches of the kinds the controller reads, keyed `namespace/name` (or `name`). */
export function key(obj: any): string {
  return obj.metadata.namespace ? `${obj.metadata.namespace}/${obj.metadata.name}` : obj.metadata.name;
}

export class Store {
  private readonly items = new Map<string, any>();
  constructor(readonly inf: Informer<any> & ObjectCache<any>) {
    const put = (o: any) => this.items.set(key(o), o);
    inf.on('add', put);
    inf.on('update', put);
    inf.on('delete', (o: any) => this.items.delete(key(o)));
  }
  get(k: string): any | undefined {
    return this.items.get(k);
  }
  list(): IterableIterator<any> {
    return this.items.values();
  }
  get size(): number {
    return this.items.size;
  }
}

export class Caches {
  readonly vms: Store;
  readonly vmis: Store;
  readonly nodes: Store;
  readonly volumes: Store;
  readonly networks: Store;

  constructor(kube: Kube) {
    this.vms = new Store(kube.informer(GVR.vm));
    this.vmis = new Store(kube.informer(GVR.vmi));
    this.nodes = new Store(kube.informer(GVR.node));
    this.volumes = new Store(kube.informer(GVR.volume));
    this.networks = new Store(kube.informer(GVR.network));
  }

  all(): Store[] {
    return [this.vms, this.vmis, this.nodes, this.volumes, this.networks];
  }

  async start(): Promise<void> {
    for (const s of this.all()) await s.inf.start();
  }

  async stop(): Promise<void> {
    for (const s of this.all()) await s.inf.stop();
  }
}
