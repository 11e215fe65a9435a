import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { Backend, StoreError, StoredObject } from '../store/backend';
import { ApiError, errors, StatusCause } from './errors';
import { ResourceType, keyPrefix, objectKey } from './registry';
import { toExternal, toStorage, apiVersionOf } from './convert';
import { validateName, validateObjectMeta } from './validation';
import * as crd from './crd';
import * as patch from './patch';

/**
 * Object semantics of kube-apiserver on top of a Backend: defaulting of
 * metadata, generation, the status subresource rules, admission (CRD schemas),
 * optimistic concurrency, finalizers, managedFields and dry runs. Both the
 * HTTP handlers and the in-process controllers write through this class.
 */
export interface WriteOptions {
  dryRun?: boolean;
  fieldManager?: string;
  /** Strict | Warn | Ignore (default Ignore, like a client that sends none). */
  fieldValidation?: string;
  subresource?: string;
  /** Collected `Warning` headers. */
  warnings?: string[];
}

export interface DeleteOptions extends WriteOptions {
  propagationPolicy?: 'Background' | 'Foreground' | 'Orphan';
  preconditions?: { uid?: string; resourceVersion?: string };
  gracePeriodSeconds?: number;
  /** The deprecated orphanDependents=false was sent: a pending deletion answers 202. */
  orphanDependentsFalse?: boolean;
}

export interface DeleteResult {
  /** The object as it is now (deletion pending) or as it was (deleted). */
  object: any;
  /** True when the object is gone from storage. */
  deleted: boolean;
}

const GENERATION_KINDS = new Set(['Deployment', 'DaemonSet', 'CustomResourceDefinition']);
const RAND_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
const CONFLICT_RETRIES = 5;

export class Objects {
  constructor(private readonly backend: Backend) {}

  // ---- reads ----

  get(t: ResourceType, ns: string | undefined, name: string): any {
    const so = this.backend.get(objectKey(t, ns, name));
    if (!so) throw errors.notFound(t.group, t.resource, name);
    return toExternal(t, so.obj);
  }

  tryGet(t: ResourceType, ns: string | undefined, name: string): any | undefined {
    const so = this.backend.get(objectKey(t, ns, name));
    return so ? toExternal(t, so.obj) : undefined;
  }

  /** Stored objects of a type (optionally in one namespace), in key order. */
  listRaw(t: ResourceType, ns?: string): StoredObject[] {
    return this.backend.list(keyPrefix(t, ns));
  }

  revision(): number {
    return this.backend.currentRevision();
  }

  // ---- create ----

  create(t: ResourceType, ns: string | undefined, body: any, opts: WriteOptions = {}): any {
    const obj = this.checkBody(t, ns, body, 'create');
    const meta = obj.metadata;
    if (!meta.name) {
      if (!meta.generateName)
        throw errors.invalid(t.kind, t.group, '', [
          { reason: 'FieldValueRequired', field: 'metadata.name', message: 'Required value: name or generateName is required' },
        ]);
      meta.name = meta.generateName + randomSuffix();
    }
    if (t.namespaced) this.checkNamespaceWritable(t, meta.namespace, meta.name);
    // Server-owned fields: whatever the client sent is replaced.
    meta.uid = randomUUID();
    meta.creationTimestamp = now();
    delete meta.resourceVersion;
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    delete meta.selfLink;
    if (t.crd || GENERATION_KINDS.has(t.kind)) meta.generation = 1;
    else delete meta.generation;
    // Nodes register with their status (the kubelet does); a new Namespace is always Active
    // and always carries the "kubernetes" finalizer (upstream's namespace PrepareForCreate).
    if (t.statusSubresource && t.kind !== 'Node') delete obj.status;
    // As upstream's pod strategy: a new pod is Pending until something schedules and runs it.
    if (t.kind === 'Pod' && !t.crd) obj.status = { phase: 'Pending', qosClass: 'BestEffort' };
    if (t.kind === 'Namespace' && Array.isArray(obj.spec?.finalizers) && !obj.spec.finalizers.includes('kubernetes'))
      obj.spec = { ...obj.spec, finalizers: [...obj.spec.finalizers, 'kubernetes'] };
    applyKindDefaults(t, obj);
    const admitted = this.admit(t, obj, opts);
    admitted.metadata.managedFields = this.managed(t, undefined, admitted, opts);
    // Upstream never serialises an empty list (omitempty), as commitUpdate does not either.
    if (!admitted.metadata.managedFields?.length) delete admitted.metadata.managedFields;
    if (opts.dryRun) return admitted;
    try {
      const so = this.backend.create(objectKey(t, meta.namespace, meta.name), toStorage(t, admitted));
      return toExternal(t, so.obj);
    } catch (e) {
      if (e instanceof StoreError && e.code === 'KeyExists') throw errors.alreadyExists(t.group, t.resource, meta.name);
      throw e;
    }
  }

  // ---- update (PUT) ----

  update(t: ResourceType, ns: string | undefined, name: string, body: any, opts: WriteOptions = {}): any {
    const obj = this.checkBody(t, ns, body, 'update');
    if (obj.metadata.name !== name)
      throw errors.badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
    const rv = obj.metadata.resourceVersion;
    if (!rv && !t.allowUnconditionalUpdate)
      throw errors.invalid(qualifiedKind(t), t.group, name, [
        { reason: 'FieldValueInvalid', field: 'metadata.resourceVersion', message: 'Invalid value: 0x0: must be specified for an update' },
      ]);
    const key = objectKey(t, ns, name);
    const current = this.backend.get(key);
    if (!current) throw errors.notFound(t.group, t.resource, name);
    if (rv && rv !== String(current.rev)) throw errors.conflict(t.group, t.resource, name);
    return this.commitUpdate(t, current, obj, opts);
  }

  /**
   * Read-modify-write with retries: `mutate` gets the current external object
   * and returns the desired one. Patches and controllers use this. When the
   * mutation pins a resourceVersion, a mismatch is a 409 and not retried.
   */
  guaranteedUpdate(
    t: ResourceType,
    ns: string | undefined,
    name: string,
    mutate: (current: any) => any,
    opts: WriteOptions = {},
  ): any {
    const key = objectKey(t, ns, name);
    for (let attempt = 0; ; attempt++) {
      const current = this.backend.get(key);
      if (!current) throw errors.notFound(t.group, t.resource, name);
      const external = toExternal(t, current.obj);
      const desired = mutate(clone(external));
      const pinned = desired?.metadata?.resourceVersion;
      if (pinned && pinned !== external.metadata.resourceVersion) throw errors.conflict(t.group, t.resource, name);
      if (desired?.metadata) desired.metadata.resourceVersion = external.metadata.resourceVersion;
      const checked = this.checkBody(t, ns, desired, 'update');
      if (checked.metadata.name !== name)
        throw errors.badRequest(`the name of the object (${checked.metadata.name}) does not match the name on the URL (${name})`);
      try {
        return this.commitUpdate(t, current, checked, opts);
      } catch (e) {
        if (e instanceof ApiError && e.reason === 'Conflict' && e.code === 409 && !pinned && attempt < CONFLICT_RETRIES) continue;
        throw e;
      }
    }
  }

  private commitUpdate(t: ResourceType, current: StoredObject, incoming: any, opts: WriteOptions): any {
    const old = toExternal(t, current.obj);
    let next: any;
    if (opts.subresource === 'status') {
      // /status: only status (and managedFields) come from the request.
      next = clone(old);
      if (incoming.status === undefined) delete next.status;
      else next.status = incoming.status;
    } else {
      next = incoming;
      if (t.statusSubresource) {
        if (old.status === undefined) delete next.status;
        else next.status = clone(old.status);
      }
      // Namespaces keep spec.finalizers unless changed through /finalize.
      if (t.kind === 'Namespace' && opts.subresource !== 'finalize') next.spec = clone(old.spec);
      if (t.kind === 'Namespace' && opts.subresource === 'finalize') {
        next = { ...clone(old), spec: { ...(old.spec ?? {}), finalizers: incoming.spec?.finalizers ?? [] } };
      }
    }
    const meta = next.metadata;
    // Fields the client cannot change.
    meta.uid = old.metadata.uid;
    meta.creationTimestamp = old.metadata.creationTimestamp;
    // (Absent, not undefined, for cluster-scoped objects: an identical write must compare equal below.)
    if (old.metadata.namespace === undefined) delete meta.namespace;
    else meta.namespace = old.metadata.namespace;
    meta.name = old.metadata.name;
    if (old.metadata.deletionTimestamp) {
      meta.deletionTimestamp = old.metadata.deletionTimestamp;
      meta.deletionGracePeriodSeconds = old.metadata.deletionGracePeriodSeconds;
      const added = (meta.finalizers ?? []).filter((f: string) => !(old.metadata.finalizers ?? []).includes(f));
      if (added.length)
        throw errors.invalid(qualifiedKind(t), t.group, meta.name, [
          {
            reason: 'FieldValueForbidden',
            field: 'metadata.finalizers',
            message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{${added
              .map((f: string) => JSON.stringify(f))
              .join(', ')}}`,
          },
        ]);
    } else {
      delete meta.deletionTimestamp;
      delete meta.deletionGracePeriodSeconds;
    }
    delete meta.selfLink;
    applyKindDefaults(t, next);
    const admitted = opts.subresource === 'status' ? next : this.admit(t, next, opts);
    // generation: bumped when anything outside metadata and status changed.
    if (old.metadata.generation !== undefined) {
      admitted.metadata.generation = old.metadata.generation;
      if (!isDeepStrictEqual(stripForGeneration(old), stripForGeneration(admitted)))
        admitted.metadata.generation = old.metadata.generation + 1;
    } else delete admitted.metadata.generation;
    admitted.metadata.resourceVersion = old.metadata.resourceVersion;
    const clientManaged = incoming.metadata?.managedFields;
    if (clientManaged !== undefined && !isDeepStrictEqual(clientManaged, old.metadata.managedFields)) {
      admitted.metadata.managedFields = clientManaged;
    } else admitted.metadata.managedFields = old.metadata.managedFields;
    // An identical write changes nothing: no new revision, no watch event.
    if (isDeepStrictEqual(withoutManaged(old), withoutManaged(admitted)) && isDeepStrictEqual(old.metadata.managedFields, admitted.metadata.managedFields))
      return old;
    admitted.metadata.managedFields = this.managed(t, old, admitted, opts);
    if (!admitted.metadata.managedFields?.length) delete admitted.metadata.managedFields;
    if (opts.dryRun) return admitted;
    const key = current.key;
    // A deletion waiting on finalizers completes when the last finalizer is removed.
    if (admitted.metadata.deletionTimestamp && readyToRemove(t, admitted)) {
      try {
        const so = this.backend.delete(key, current.rev);
        return toExternal(t, so.obj);
      } catch (e) {
        throw this.storeError(t, admitted.metadata.name, e);
      }
    }
    try {
      const so = this.backend.update(key, toStorage(t, admitted), current.rev);
      return toExternal(t, so.obj);
    } catch (e) {
      throw this.storeError(t, admitted.metadata.name, e);
    }
  }

  // ---- delete ----

  delete(t: ResourceType, ns: string | undefined, name: string, opts: DeleteOptions = {}): DeleteResult {
    const key = objectKey(t, ns, name);
    for (let attempt = 0; ; attempt++) {
      const current = this.backend.get(key);
      if (!current) throw errors.notFound(t.group, t.resource, name);
      const obj = toExternal(t, current.obj);
      const pre = opts.preconditions;
      if (pre?.uid && pre.uid !== obj.metadata.uid)
        throw errors.conflict(
          t.group,
          t.resource,
          name,
          `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${obj.metadata.uid}`,
        );
      if (pre?.resourceVersion && pre.resourceVersion !== obj.metadata.resourceVersion)
        throw errors.conflict(
          t.group,
          t.resource,
          name,
          `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${obj.metadata.resourceVersion}`,
        );
      if (t.kind === 'Namespace' && ['default', 'kube-system', 'kube-public'].includes(name))
        throw errors.forbidden(`namespaces "${name}" is forbidden: this namespace may not be deleted`, '', 'namespaces', name);
      const finalizers: string[] = [...(obj.metadata.finalizers ?? [])];
      const policy = opts.propagationPolicy;
      if (policy === 'Foreground' && !finalizers.includes('foregroundDeletion')) finalizers.push('foregroundDeletion');
      if (policy === 'Orphan' && !finalizers.includes('orphan')) finalizers.push('orphan');
      const graceful = finalizers.length > 0 || (t.kind === 'Namespace' && (obj.spec?.finalizers ?? []).length > 0);
      try {
        if (!graceful) {
          if (opts.dryRun) return { object: obj, deleted: true };
          const so = this.backend.delete(key, current.rev);
          return { object: toExternal(t, so.obj), deleted: true };
        }
        if (obj.metadata.deletionTimestamp && isDeepStrictEqual(finalizers, obj.metadata.finalizers ?? []))
          return { object: obj, deleted: false }; // a second DELETE changes nothing
        const next = clone(obj);
        next.metadata.deletionTimestamp ??= now();
        next.metadata.deletionGracePeriodSeconds ??= 0;
        if (finalizers.length) next.metadata.finalizers = finalizers;
        if (t.kind === 'Namespace') next.status = { ...(next.status ?? {}), phase: 'Terminating' };
        if (opts.dryRun) return { object: next, deleted: false };
        const so = this.backend.update(key, toStorage(t, next), current.rev);
        return { object: toExternal(t, so.obj), deleted: false };
      } catch (e) {
        if (e instanceof StoreError && e.code === 'Conflict' && attempt < CONFLICT_RETRIES) continue;
        throw this.storeError(t, name, e);
      }
    }
  }

  // ---- helpers ----

  /** Body checks shared by create and update: JSON object, apiVersion/kind, namespace. */
  private checkBody(t: ResourceType, ns: string | undefined, body: any, verb: 'create' | 'update'): any {
    if (body === null || typeof body !== 'object' || Array.isArray(body))
      throw errors.badRequest(`the body of the request must be a JSON object (${verb})`);
    const obj = clone(body);
    const expected = apiVersionOf(t);
    if (obj.apiVersion !== undefined && obj.apiVersion !== expected)
      throw errors.badRequest(`the API version in the data (${obj.apiVersion}) does not match the expected API version (${expected})`);
    if (obj.kind !== undefined && obj.kind !== t.kind)
      throw errors.badRequest(`the kind in the data (${obj.kind}) does not match the expected kind (${t.kind})`);
    // Built-in endpoints decode into their type and fill apiVersion/kind in; custom
    // resources are decoded as unstructured and must carry them (as upstream).
    if (obj.apiVersion === undefined && verb === 'create' && t.crd) throw errors.badRequest(`Object 'apiVersion' is missing in '${truncate(JSON.stringify(body))}'`);
    if (obj.kind === undefined && verb === 'create' && t.crd) throw errors.badRequest(`Object 'Kind' is missing in '${truncate(JSON.stringify(body))}'`);
    obj.apiVersion = expected;
    obj.kind = t.kind;
    if (obj.metadata === undefined || obj.metadata === null) obj.metadata = {};
    if (typeof obj.metadata !== 'object' || Array.isArray(obj.metadata))
      throw errors.badRequest('metadata must be an object');
    if (t.namespaced) {
      if (obj.metadata.namespace && ns && obj.metadata.namespace !== ns)
        throw errors.badRequest('the namespace of the provided object does not match the namespace sent on the request');
      obj.metadata.namespace = ns ?? obj.metadata.namespace;
      if (!obj.metadata.namespace) throw errors.badRequest('a namespace is required for a namespaced resource');
    } else delete obj.metadata.namespace;
    return obj;
  }

  private checkNamespaceWritable(t: ResourceType, ns: string, name: string): void {
    const nso = this.backend.get(`/core/namespaces/${ns}`);
    if (!nso) throw errors.notFound('', 'namespaces', ns);
    if (nso.obj.metadata.deletionTimestamp)
      throw errors.forbidden(
        `${t.group ? `${t.resource}.${t.group}` : t.resource} "${name}" is forbidden: unable to create new content in namespace ${ns} because it is being terminated`,
        t.group,
        t.resource,
        name,
      );
  }

  /** Validation, and for custom resources pruning, defaulting and schema checks. */
  private admit(t: ResourceType, obj: any, opts: WriteOptions): any {
    const name = obj.metadata.name;
    const causes: StatusCause[] = [...validateName(t.nameRule, name), ...validateObjectMeta(obj.metadata)];
    if (t.namespaced) causes.push(...validateName('label', obj.metadata.namespace, 'metadata.namespace'));
    let out = obj;
    if (t.crd) {
      const compiled = crd.compileVersion(t.crd, t.version);
      const pruned = compiled.prune(out);
      this.handleUnknownFields(pruned.unknownFields, opts);
      out = compiled.applyDefaults(pruned.object);
      causes.push(...compiled.validate(out));
    } else if (t.kind === 'CustomResourceDefinition') {
      out = crd.defaultCrd(out);
      causes.push(...crd.validateCrd(out));
    }
    if (causes.length) throw errors.invalid(qualifiedKind(t), t.group, name ?? '', dedupe(causes));
    return out;
  }

  private handleUnknownFields(unknown: string[], opts: WriteOptions): void {
    if (!unknown.length) return;
    const mode = (opts.fieldValidation ?? 'Ignore').toLowerCase();
    if (mode === 'strict')
      throw errors.badRequest(`strict decoding error: ${unknown.map((f) => `unknown field "${f}"`).join(', ')}`);
    if (mode === 'warn') for (const f of unknown) opts.warnings?.push(`unknown field "${f}"`);
  }

  private managed(t: ResourceType, oldObj: any | undefined, newObj: any, opts: WriteOptions): any[] | undefined {
    if (!opts.fieldManager) return newObj.metadata.managedFields;
    return patch.updateManagedFields({
      oldObj,
      newObj,
      manager: opts.fieldManager,
      apiVersion: apiVersionOf(t),
      now: now(),
      subresource: opts.subresource === 'status' ? 'status' : undefined,
      schema: schemaFor(t),
    });
  }

  private storeError(t: ResourceType, name: string, e: unknown): unknown {
    if (e instanceof StoreError) {
      if (e.code === 'Conflict') return errors.conflict(t.group, t.resource, name);
      if (e.code === 'NotFound') return errors.notFound(t.group, t.resource, name);
      if (e.code === 'KeyExists') return errors.alreadyExists(t.group, t.resource, name);
    }
    return e;
  }
}

/** The schema SSA uses for list semantics: the CRD's, or the built-in merge-key table. */
export function schemaFor(t: ResourceType): any {
  if (t.crd) {
    const v = (t.crd.spec.versions ?? []).find((x: any) => x.name === t.version);
    return v?.schema?.openAPIV3Schema;
  }
  return patch.builtinSchema(t.group, t.kind);
}

export function qualifiedKind(t: ResourceType): string {
  return t.group && t.crd ? `${t.kind}.${t.group}` : t.kind;
}

/** Defaults kube-apiserver applies to built-in kinds that our controllers and printers rely on. */
function applyKindDefaults(t: ResourceType, obj: any): void {
  if (t.crd) return;
  switch (t.kind) {
    case 'Namespace':
      obj.spec = { finalizers: ['kubernetes'], ...(obj.spec ?? {}) };
      obj.status = { phase: obj.metadata.deletionTimestamp ? 'Terminating' : 'Active', ...(obj.status ?? {}) };
      if (!obj.metadata.labels?.['kubernetes.io/metadata.name'])
        obj.metadata.labels = { ...(obj.metadata.labels ?? {}), 'kubernetes.io/metadata.name': obj.metadata.name };
      break;
    case 'Secret':
      obj.type ??= 'Opaque';
      break;
    case 'Service':
      obj.spec = { type: 'ClusterIP', sessionAffinity: 'None', ...(obj.spec ?? {}) };
      break;
    case 'Pod':
      obj.spec = { restartPolicy: 'Always', dnsPolicy: 'ClusterFirst', schedulerName: 'default-scheduler', ...(obj.spec ?? {}) };
      break;
    case 'Deployment':
      obj.spec = { replicas: 1, revisionHistoryLimit: 10, progressDeadlineSeconds: 600, ...(obj.spec ?? {}) };
      break;
  }
}

function readyToRemove(t: ResourceType, obj: any): boolean {
  if ((obj.metadata.finalizers ?? []).length) return false;
  if (t.kind === 'Namespace' && (obj.spec?.finalizers ?? []).length) return false;
  return true;
}

function stripForGeneration(obj: any): any {
  const { metadata: _m, status: _s, ...rest } = obj;
  return rest;
}

function withoutManaged(obj: any): any {
  const { managedFields: _mf, ...meta } = obj.metadata;
  return { ...obj, metadata: meta };
}

function dedupe(causes: StatusCause[]): StatusCause[] {
  const seen = new Set<string>();
  return causes.filter((c) => {
    const k = `${c.field}|${c.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/**
 * Deep copy of a JSON value. Not structuredClone: under jest's vm sandbox that
 * returns objects of another realm, which isDeepStrictEqual treats as different.
 */
export function clone<T>(x: T): T {
  return x === undefined ? x : JSON.parse(JSON.stringify(x));
}

export function now(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function randomSuffix(): string {
  let s = '';
  for (let i = 0; i < 5; i++) s += RAND_ALPHABET[Math.floor(Math.random() * RAND_ALPHABET.length)];
  return s;
}

function truncate(s: string): string {
  return s.length > 200 ? s.slice(0, 200) + '…' : s;
}
