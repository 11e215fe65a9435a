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

/** CPU and memory held on each node by unfinished instances, kept up to date from VMI events. */
export class NodeUsage {
  private readonly byInstance = new Map<string, { node: string; cpu: number; mem: number }>();
  private readonly byNode = new Map<string, { cpu: number; mem: number }>();

  constructor(private readonly measure: (spec: any) => { cpu: number; mem: number }) {}

  observe(vmi: any, deleted: boolean): void {
    const k = key(vmi);
    const old = this.byInstance.get(k);
    if (old) {
      const n = this.byNode.get(old.node)!;
      n.cpu -= old.cpu;
      n.mem -= old.mem;
      this.byInstance.delete(k);
    }
    const node = vmi.spec?.nodeName;
    if (deleted || !node || ['Succeeded', 'Failed'].includes(vmi.status?.phase)) return;
    const m = this.measure(vmi.spec);
    this.byInstance.set(k, { node, ...m });
    const n = this.byNode.get(node) ?? { cpu: 0, mem: 0 };
    n.cpu += m.cpu;
    n.mem += m.mem;
    this.byNode.set(node, n);
  }

  of(node: string): { cpu: number; mem: number } {
    return this.byNode.get(node) ?? { cpu: 0, mem: 0 };
  }
}

export class Caches {
  readonly vms: Store;
  readonly vmis: Store;
  readonly nodes: Store;
  readonly volumes: Store;
  readonly networks: Store;
  /** ContainerPathMounts (see ./mounts.ts). */
  readonly mounts: Store;
  readonly backupPolicies: Store;
  readonly backups: Store;
  readonly restores: Store;
  readonly migrations: Store;

  readonly usage: NodeUsage;

  constructor(
    kube: Kube,
    private readonly measure: (spec: any) => { cpu: number; mem: number },
  ) {
    this.vms = new Store(kube.informer(GVR.vm));
    this.vmis = new Store(kube.informer(GVR.vmi));
    this.usage = new NodeUsage(measure);
    this.vmis.inf.on('add', (o: any) => this.usage.observe(o, false));
    this.vmis.inf.on('update', (o: any) => this.usage.observe(o, false));
    this.vmis.inf.on('delete', (o: any) => this.usage.observe(o, true));
    this.nodes = new Store(kube.informer(GVR.node));
    this.volumes = new Store(kube.informer(GVR.volume));
    this.networks = new Store(kube.informer(GVR.network));
    this.mounts = new Store(kube.informer(GVR.containerPathMount));
    this.backupPolicies = new Store(kube.informer(GVR.backupPolicy));
    this.backups = new Store(kube.informer(GVR.backup));
    this.restores = new Store(kube.informer(GVR.restore));
    this.migrations = new Store(kube.informer(GVR.migration));
  }

  /**
   * CPU and memory held on a node: its instances, plus the instances migrating to it (their target copy
   * runs there before the switch-over), so nothing is scheduled into room a migration has taken.
   */
  usedOn(node: string): { cpu: number; mem: number } {
    const u = { ...this.usage.of(node) };
    for (const m of this.migrations.list()) {
      if (m.status?.targetNode !== node || !['PreparingTarget', 'TargetReady', 'Running'].includes(m.status?.phase)) continue;
      const vmi = this.vmis.get(`${m.metadata.namespace}/${m.spec?.vm}`);
      if (!vmi || vmi.spec?.nodeName === node) continue;
      const r = this.measure(vmi.spec);
      u.cpu += r.cpu;
      u.mem += r.mem;
    }
    return u;
  }

  all(): Store[] {
    return [this.vms, this.vmis, this.nodes, this.volumes, this.networks, this.mounts, this.backupPolicies, this.backups, this.restores, this.migrations];
  }

  async start(): Promise<void> {
    for (const s of this.all()) await s.inf.start();
  }

  async stop(): Promise<void> {
    for (const s of this.all()) await s.inf.stop();
  }
}
