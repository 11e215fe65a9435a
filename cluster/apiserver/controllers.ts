import { Backend, StoreEvent } from '../store/backend';
import { ApiError } from './errors';
import { Objects } from './objects';
import { Registry, ResourceType, BUILTIN_TYPES } from './registry';

/**
 * The in-process controllers kube-controller-manager and apiextensions run
 * upstream: CRD establishment and cleanup, namespace lifecycle, and the
 * ownerReference garbage collector. Each is level-triggered: an event only
 * queues a key, and the reconcile reads the current state. Work runs on a
 * later tick so no write happens inside another write's event fan-out.
 */
class Queue {
  private pending = new Set<string>();
  private scheduled = false;
  private retries = new Map<string, number>();

  constructor(
    private readonly name: string,
    private readonly reconcile: (key: string) => void,
  ) {}

  add(key: string): void {
    this.pending.add(key);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.drain());
    }
  }

  private drain(): void {
    this.scheduled = false;
    const keys = [...this.pending];
    this.pending.clear();
    for (const key of keys) {
      try {
        this.reconcile(key);
        this.retries.delete(key);
      } catch (e) {
        // Retry with back-off; conflicts are normal when racing with clients.
        const n = (this.retries.get(key) ?? 0) + 1;
        this.retries.set(key, n);
        if (!(e instanceof ApiError && e.code === 409) && n > 3)
          console.error(`[${this.name}] reconcile ${key} failed (attempt ${n}): ${(e as Error).message}`);
        setTimeout(() => this.add(key), Math.min(100 * 2 ** n, 5000)).unref();
      }
    }
  }
}

const CRD_TYPE = BUILTIN_TYPES.find((t) => t.kind === 'CustomResourceDefinition')!;
const NS_TYPE = BUILTIN_TYPES.find((t) => t.kind === 'Namespace')!;
const SA_TYPE = BUILTIN_TYPES.find((t) => t.kind === 'ServiceAccount')!;
export const CRD_CLEANUP_FINALIZER = 'customresourcecleanup.apiextensions.k8s.io';

export class Controllers {
  private readonly crdQueue: Queue;
  private readonly nsQueue: Queue;
  private readonly gcQueue: Queue;
  /** uid → storage key, for every object; lets the GC tell whether an owner exists. */
  private readonly uidToKey = new Map<string, string>();
  /** owner uid → keys of objects that name it in ownerReferences. */
  private readonly dependents = new Map<string, Set<string>>();
  private unsubscribe: () => void = () => {};

  constructor(
    private readonly backend: Backend,
    private readonly objects: Objects,
    private readonly registry: Registry,
  ) {
    this.crdQueue = new Queue('crd', (k) => this.reconcileCrd(k));
    this.nsQueue = new Queue('namespace', (k) => this.reconcileNamespace(k));
    this.gcQueue = new Queue('garbage-collector', (k) => this.reconcileOwner(k));
  }

  start(): void {
    for (const so of this.backend.list('/')) this.observe({ type: 'ADDED', key: so.key, rev: so.rev, obj: so.obj });
    this.unsubscribe = this.backend.subscribe((ev) => this.observe(ev));
  }

  stop(): void {
    this.unsubscribe();
  }

  private observe(ev: StoreEvent): void {
    const meta = ev.obj.metadata;
    // Index ownership.
    if (ev.prev) this.unindex(ev.key, ev.prev);
    if (ev.type === 'DELETED') {
      this.uidToKey.delete(meta.uid);
      // Dependents of a deleted owner need a look.
      if (this.dependents.has(meta.uid)) this.gcQueue.add(`uid:${meta.uid}`);
    } else {
      this.uidToKey.set(meta.uid, ev.key);
      for (const ref of meta.ownerReferences ?? []) {
        if (!this.dependents.has(ref.uid)) this.dependents.set(ref.uid, new Set());
        this.dependents.get(ref.uid)!.add(ev.key);
        // An object created after its owner went away is collected too.
        if (!this.uidToKey.has(ref.uid)) this.gcQueue.add(`uid:${ref.uid}`);
      }
      const fin: string[] = meta.finalizers ?? [];
      if (meta.deletionTimestamp && (fin.includes('foregroundDeletion') || fin.includes('orphan'))) this.gcQueue.add(`key:${ev.key}`);
    }
    // A dependent going away may let a foreground-deleting owner finish.
    if (ev.type === 'DELETED')
      for (const ref of meta.ownerReferences ?? []) {
        const ownerKey = this.uidToKey.get(ref.uid);
        if (ownerKey) this.gcQueue.add(`key:${ownerKey}`);
      }
    if (ev.key.startsWith('/apiextensions.k8s.io/customresourcedefinitions/')) {
      // Serving follows the stored CRD at once (same tick), so discovery is immediate.
      if (ev.type === 'DELETED') this.registry.removeCrd(meta.name);
      else this.registry.setCrd(ev.obj);
      if (ev.type !== 'DELETED') this.crdQueue.add(meta.name);
    }
    if (ev.key.startsWith('/core/namespaces/') && ev.type !== 'DELETED') this.nsQueue.add(meta.name);
  }

  private unindex(key: string, prev: any): void {
    for (const ref of prev.metadata.ownerReferences ?? []) {
      const set = this.dependents.get(ref.uid);
      set?.delete(key);
      if (set && !set.size) this.dependents.delete(ref.uid);
    }
  }

  // ---- CRDs ----

  private reconcileCrd(name: string): void {
    const crd = this.objects.tryGet(CRD_TYPE, undefined, name);
    if (!crd) return;
    if (crd.metadata.deletionTimestamp) return this.cleanupCrd(crd);
    if (!(crd.metadata.finalizers ?? []).includes(CRD_CLEANUP_FINALIZER)) {
      this.objects.guaranteedUpdate(CRD_TYPE, undefined, name, (cur) => {
        cur.metadata.finalizers = [...(cur.metadata.finalizers ?? []), CRD_CLEANUP_FINALIZER];
        return cur;
      });
      return;
    }
    const now = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    const cond = (type: string, reason: string, message: string) => ({ type, status: 'True', lastTransitionTime: now, reason, message });
    const wanted = {
      acceptedNames: crd.spec.names,
      storedVersions: [...new Set([...(crd.status?.storedVersions ?? []), crd.spec.versions.find((v: any) => v.storage)?.name])].filter(Boolean),
      conditions: [
        cond('NamesAccepted', 'NoConflicts', 'no conflicts found'),
        cond('Established', 'InitialNamesAccepted', 'the initial names have been accepted'),
      ],
    };
    const same =
      JSON.stringify(crd.status?.acceptedNames) === JSON.stringify(wanted.acceptedNames) &&
      JSON.stringify(crd.status?.storedVersions) === JSON.stringify(wanted.storedVersions) &&
      ['NamesAccepted', 'Established'].every((t) => crd.status?.conditions?.some((c: any) => c.type === t && c.status === 'True'));
    if (same) return;
    this.objects.guaranteedUpdate(
      CRD_TYPE,
      undefined,
      name,
      (cur) => {
        const keep = (t: string) => cur.status?.conditions?.find((c: any) => c.type === t && c.status === 'True');
        cur.status = {
          ...wanted,
          conditions: wanted.conditions.map((c) => keep(c.type) ?? c),
        };
        return cur;
      },
      { subresource: 'status', fieldManager: 'kube-apiserver' },
    );
  }

  /** Deleting a CRD deletes all of its objects, then releases the CRD. */
  private cleanupCrd(crd: any): void {
    const prefix = `/${crd.spec.group}/${crd.spec.names.plural}/`;
    for (const so of this.backend.list(prefix)) {
      try {
        this.backend.delete(so.key, so.rev);
      } catch {
        /* raced with another writer: the next pass gets it */
      }
    }
    if (this.backend.count(prefix) > 0) throw new Error(`objects of ${crd.metadata.name} remain`);
    this.objects.guaranteedUpdate(CRD_TYPE, undefined, crd.metadata.name, (cur) => {
      cur.metadata.finalizers = (cur.metadata.finalizers ?? []).filter((f: string) => f !== CRD_CLEANUP_FINALIZER);
      return cur;
    });
  }

  // ---- namespaces ----

  private reconcileNamespace(name: string): void {
    const ns = this.objects.tryGet(NS_TYPE, undefined, name);
    if (!ns) return;
    if (!ns.metadata.deletionTimestamp) {
      // The serviceaccount controller's job upstream: every namespace has "default".
      if (!this.objects.tryGet(SA_TYPE, name, 'default'))
        try {
          this.objects.create(SA_TYPE, name, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default' } });
        } catch (e) {
          if (!(e instanceof ApiError && (e.reason === 'AlreadyExists' || e.code === 403))) throw e;
        }
      return;
    }
    // Terminating: delete every namespaced object in it, then finalize.
    let remaining = 0;
    for (const t of this.namespacedStorageTypes()) {
      for (const so of this.objects.listRaw(t, name)) {
        remaining++;
        if (so.obj.metadata.deletionTimestamp) continue;
        try {
          this.objects.delete(t, name, so.obj.metadata.name, { propagationPolicy: 'Background' });
        } catch (e) {
          if (!(e instanceof ApiError && e.code === 404)) throw e;
        }
      }
    }
    if (remaining > 0) {
      // Objects with finalizers (or just deleted) are re-checked shortly.
      setTimeout(() => this.nsQueue.add(name), 200).unref();
      return;
    }
    if ((ns.spec?.finalizers ?? []).length)
      this.objects.guaranteedUpdate(NS_TYPE, undefined, name, (cur) => ({ ...cur, spec: { ...cur.spec, finalizers: [] } }), {
        subresource: 'finalize',
      });
  }

  private namespacedStorageTypes(): ResourceType[] {
    const seen = new Set<string>();
    const out: ResourceType[] = [];
    for (const t of this.registry.all()) {
      const k = `${t.storageGroup}/${t.storageResource}`;
      if (!t.namespaced || seen.has(k) || t.group !== t.storageGroup) continue;
      seen.add(k);
      out.push(this.registry.byStorage(t.storageGroup, t.storageResource) ?? t);
    }
    return out;
  }

  // ---- garbage collection ----

  private typeOfKey(key: string): { t: ResourceType; ns?: string; name: string } | undefined {
    const parts = key.split('/').slice(1);
    const group = parts[0] === 'core' ? '' : parts[0];
    const t = this.registry.byStorage(group, parts[1]);
    if (!t) return undefined;
    return t.namespaced ? { t, ns: parts[2], name: parts[3] } : { t, name: parts[2] };
  }

  private reconcileOwner(item: string): void {
    if (item.startsWith('uid:')) return this.collectDependentsOf(item.slice(4));
    const key = item.slice(4);
    const so = this.backend.get(key);
    if (!so || !so.obj.metadata.deletionTimestamp) return;
    const where = this.typeOfKey(key);
    if (!where) return;
    const uid = so.obj.metadata.uid;
    const fin: string[] = so.obj.metadata.finalizers ?? [];
    const deps = [...(this.dependents.get(uid) ?? [])];
    if (fin.includes('orphan')) {
      for (const dk of deps) this.dropOwnerRef(dk, uid);
      this.removeFinalizer(where, 'orphan');
      return;
    }
    if (fin.includes('foregroundDeletion')) {
      for (const dk of deps) {
        const d = this.typeOfKey(dk);
        const dso = this.backend.get(dk);
        if (!d || !dso || dso.obj.metadata.deletionTimestamp) continue;
        try {
          this.objects.delete(d.t, d.ns, d.name, { propagationPolicy: 'Foreground' });
        } catch (e) {
          if (!(e instanceof ApiError && e.code === 404)) throw e;
        }
      }
      // Wait until dependents that block owner deletion are gone.
      const blocking = [...(this.dependents.get(uid) ?? [])].filter((dk) => this.backend.get(dk));
      if (blocking.length === 0) this.removeFinalizer(where, 'foregroundDeletion');
    }
  }

  /** Background deletion: dependents whose owners are all gone are deleted. */
  private collectDependentsOf(ownerUid: string): void {
    if (this.uidToKey.has(ownerUid)) return;
    for (const dk of [...(this.dependents.get(ownerUid) ?? [])]) {
      const so = this.backend.get(dk);
      const d = this.typeOfKey(dk);
      if (!so || !d) continue;
      const refs: any[] = so.obj.metadata.ownerReferences ?? [];
      const alive = refs.filter((r) => this.uidToKey.has(r.uid));
      if (alive.length) {
        this.dropOwnerRef(dk, ownerUid);
        continue;
      }
      if (so.obj.metadata.deletionTimestamp) continue;
      try {
        this.objects.delete(d.t, d.ns, d.name, { propagationPolicy: 'Background' });
      } catch (e) {
        if (!(e instanceof ApiError && e.code === 404)) throw e;
      }
    }
  }

  private dropOwnerRef(key: string, ownerUid: string): void {
    const d = this.typeOfKey(key);
    if (!d || !this.backend.get(key)) return;
    this.objects.guaranteedUpdate(d.t, d.ns, d.name, (cur) => {
      const refs = (cur.metadata.ownerReferences ?? []).filter((r: any) => r.uid !== ownerUid);
      if (refs.length) cur.metadata.ownerReferences = refs;
      else delete cur.metadata.ownerReferences;
      return cur;
    });
  }

  private removeFinalizer(where: { t: ResourceType; ns?: string; name: string }, finalizer: string): void {
    this.objects.guaranteedUpdate(where.t, where.ns, where.name, (cur) => {
      cur.metadata.finalizers = (cur.metadata.finalizers ?? []).filter((f: string) => f !== finalizer);
      return cur;
    });
  }
}
