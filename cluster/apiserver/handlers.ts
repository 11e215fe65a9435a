import { IncomingMessage, ServerResponse } from 'node:http';
import YAML from 'yaml';
import { ApiError, errors } from './errors';
import { ResourceType } from './registry';
import { Objects, DeleteOptions, WriteOptions, clone, schemaFor } from './objects';
import { apiVersionOf, toExternal } from './convert';
import { WatchHub } from './watch';
import { Backend } from '../store/backend';
import { parseLabelSelector, parseFieldSelector, compileFieldSelector, SelectorError, labelSelectorToString } from './selectors';
import { buildTable, wantsTable } from './tables';
import * as patch from './patch';
import * as crd from './crd';

/**
 * The verbs on resources: list, watch, get, create, update, patch, delete,
 * deletecollection, and the status, scale and finalize subresources.
 */
export interface ResourceRequest {
  type: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
  query: URLSearchParams;
  req: IncomingMessage;
  res: ServerResponse;
  /** The request body, already read and size-checked (empty for GET). */
  body: Buffer;
}

export interface Reply {
  code: number;
  body: any;
  warnings?: string[];
}

const JSON_TYPES = ['application/json', 'application/yaml'];
const PATCH_TYPES = [
  'application/json-patch+json',
  'application/merge-patch+json',
  'application/strategic-merge-patch+json',
  'application/apply-patch+yaml',
];
const CR_PATCH_TYPES = ['application/json-patch+json', 'application/merge-patch+json', 'application/apply-patch+yaml'];

export class Handlers {
  constructor(
    private readonly objects: Objects,
    private readonly backend: Backend,
    private readonly watches: WatchHub,
  ) {}

  /** Returns a reply to send, or undefined when the handler streamed the response itself (watch). */
  handle(r: ResourceRequest): Reply | undefined {
    const method = r.req.method ?? 'GET';
    const t = r.type;
    if (r.subresource && !t.subresources.includes(r.subresource)) throw errors.noResource();
    if (!r.name) {
      if (r.subresource) throw errors.noResource();
      switch (method) {
        case 'GET':
          return isWatch(r.query) ? this.watch(r) : this.list(r);
        case 'POST':
          if (t.namespaced && !r.namespace) throw errors.methodNotAllowed();
          return this.create(r);
        case 'DELETE':
          return this.deleteCollection(r);
        default:
          throw errors.methodNotAllowed();
      }
    }
    if (t.namespaced && !r.namespace) throw errors.noResource();
    if (r.subresource === 'scale') return this.scale(r, method);
    if (r.subresource === 'finalize' && method !== 'PUT') throw errors.methodNotAllowed();
    switch (method) {
      case 'GET': {
        if (isWatch(r.query)) throw errors.methodNotAllowed();
        const obj = this.objects.get(t, r.namespace, r.name);
        if (!r.subresource && wantsTable(r.req.headers.accept))
          return { code: 200, body: this.table(r, [obj], obj.metadata.resourceVersion) };
        return { code: 200, body: obj };
      }
      case 'PUT':
        return this.update(r);
      case 'PATCH':
        return this.patch(r);
      case 'DELETE':
        if (r.subresource) throw errors.methodNotAllowed();
        return this.delete(r);
      default:
        throw errors.methodNotAllowed();
    }
  }

  // ---- reads ----

  private selector(r: ResourceRequest): (obj: any) => boolean {
    try {
      const labels = parseLabelSelector(r.query.get('labelSelector') ?? undefined);
      const fields = compileFieldSelector(
        parseFieldSelector(r.query.get('fieldSelector') ?? undefined),
        r.type.group,
        r.type.resource,
        r.type.selectableFields,
      );
      return (obj) => labels(obj.metadata?.labels) && fields(toExternal(r.type, obj));
    } catch (e) {
      if (e instanceof SelectorError) throw errors.badRequest(e.message);
      throw e;
    }
  }

  private list(r: ResourceRequest): Reply {
    const t = r.type;
    const match = this.selector(r);
    const limit = Number(r.query.get('limit') ?? 0) || 0;
    const cont = r.query.get('continue');
    const rvParam = r.query.get('resourceVersion');
    let startAfter = '';
    let listRv = String(this.backend.currentRevision());
    if (cont) {
      if (rvParam && rvParam !== '0') throw errors.badRequest('specifying resource version is not allowed when using continue');
      const token = decodeContinue(cont);
      if (token.rv < this.backend.compactedRevision())
        throw errors.expired(
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
        );
      startAfter = token.start;
      listRv = String(token.rv);
    }
    const items: any[] = [];
    let next: string | undefined;
    let remaining = 0;
    for (const so of this.objects.listRaw(t, r.namespace)) {
      if (startAfter && so.key <= startAfter) continue;
      if (!match(so.obj)) continue;
      if (limit && items.length >= limit) {
        remaining++;
        continue;
      }
      items.push(so);
    }
    if (limit && remaining > 0) next = encodeContinue({ rv: Number(listRv), start: items[items.length - 1].key });
    const metadata: any = { resourceVersion: listRv };
    if (next) {
      metadata.continue = next;
      metadata.remainingItemCount = remaining;
    }
    const objs = items.map((so) => toExternal(t, so.obj));
    if (wantsTable(r.req.headers.accept))
      return { code: 200, body: this.table(r, objs, listRv, next, next ? remaining : undefined) };
    return { code: 200, body: { kind: t.listKind, apiVersion: apiVersionOf(t), metadata, items: objs } };
  }

  private table(r: ResourceRequest, objects: any[], resourceVersion: string, continueToken?: string, remainingItemCount?: number): any {
    const include = r.query.get('includeObject') ?? undefined;
    if (include && !['None', 'Metadata', 'Object'].includes(include))
      throw errors.badRequest(`includeObject: Unsupported value: "${include}": supported values: "None", "Metadata", "Object"`);
    return buildTable({
      group: r.type.group,
      resource: r.type.resource,
      objects,
      printerColumns: r.type.crd ? r.type.printerColumns : undefined,
      resourceVersion,
      continueToken,
      remainingItemCount,
      includeObject: include as any,
      evalJsonPath: crd.evalJsonPath,
    });
  }

  private watch(r: ResourceRequest): undefined {
    const t = r.type;
    const match = this.selector(r);
    const table = wantsTable(r.req.headers.accept);
    const timeout = r.query.get('timeoutSeconds');
    this.watches.serve(
      {
        type: t,
        namespace: r.namespace,
        resourceVersion: r.query.get('resourceVersion') ?? undefined,
        allowBookmarks: r.query.get('allowWatchBookmarks') === 'true',
        sendInitialEvents: r.query.get('sendInitialEvents') === 'true',
        timeoutSeconds: timeout ? Math.max(1, Number(timeout)) : undefined,
        match,
        formatKey: `${apiVersionOf(t)}|${table ? 'table' : 'json'}`,
        encode: (type, obj) =>
          table && type !== 'ERROR' && type !== 'BOOKMARK'
            ? buildTable({
                group: t.group,
                resource: t.resource,
                objects: [obj],
                printerColumns: t.crd ? t.printerColumns : undefined,
                resourceVersion: obj.metadata.resourceVersion,
                evalJsonPath: crd.evalJsonPath,
              })
            : obj,
      },
      r.res,
    );
    return undefined;
  }

  // ---- writes ----

  private writeOptions(r: ResourceRequest): WriteOptions {
    const dry = r.query.getAll('dryRun');
    for (const d of dry) if (d !== 'All') throw errors.badRequest(`Invalid dryRun value: ${d}: valid values are "All"`);
    const fv = r.query.get('fieldValidation') ?? undefined;
    if (fv && !['Ignore', 'Warn', 'Strict'].includes(fv))
      throw errors.badRequest(`fieldValidation ${fv} is not a valid value: must be one of Ignore, Warn or Strict`);
    return {
      dryRun: dry.length > 0,
      fieldManager: r.query.get('fieldManager') ?? managerFromUserAgent(r.req.headers['user-agent']),
      fieldValidation: fv,
      subresource: r.subresource,
      warnings: [],
    };
  }

  private create(r: ResourceRequest): Reply {
    const body = parseBody(r, JSON_TYPES);
    const opts = this.writeOptions(r);
    const obj = this.objects.create(r.type, r.namespace, body, opts);
    return { code: 201, body: obj, warnings: opts.warnings };
  }

  private update(r: ResourceRequest): Reply {
    const body = parseBody(r, JSON_TYPES);
    const opts = this.writeOptions(r);
    const obj = this.objects.update(r.type, r.namespace, r.name!, body, opts);
    return { code: 200, body: obj, warnings: opts.warnings };
  }

  private patch(r: ResourceRequest): Reply {
    const t = r.type;
    const ct = mediaType(r.req.headers['content-type']);
    const allowed = t.crd ? CR_PATCH_TYPES : PATCH_TYPES;
    if (!allowed.includes(ct)) throw errors.unsupportedMediaType(ct, allowed);
    const opts = this.writeOptions(r);
    const force = r.query.get('force');
    if (force !== null && ct !== 'application/apply-patch+yaml')
      throw errors.invalid('PatchOptions.meta.k8s.io', 'meta.k8s.io', '', [
        { reason: 'FieldValueForbidden', field: 'force', message: 'Forbidden: may not be specified for non-apply patch' },
      ]);
    if (ct === 'application/apply-patch+yaml') return this.apply(r, opts, force === 'true');
    const text = r.body.toString('utf8');
    let body: any;
    try {
      body = JSON.parse(text);
    } catch (e) {
      throw errors.badRequest(`error decoding patch: ${(e as Error).message}`);
    }
    const fn = (cur: any): any => {
      try {
        if (ct === 'application/json-patch+json') return patch.applyJsonPatch(cur, body);
        if (ct === 'application/merge-patch+json') return patch.applyMergePatch(cur, body);
        return patch.applyStrategicMergePatch(cur, body, t.group, t.kind);
      } catch (e) {
        throw patchError(t, r.name!, e);
      }
    };
    const obj = this.objects.guaranteedUpdate(t, r.namespace, r.name!, fn, opts);
    return { code: 200, body: obj, warnings: opts.warnings };
  }

  /** Server-side apply: create when absent (201), else merge with ownership and conflicts. */
  private apply(r: ResourceRequest, opts: WriteOptions, force: boolean): Reply {
    const t = r.type;
    const manager = r.query.get('fieldManager');
    if (!manager)
      throw errors.invalid('PatchOptions.meta.k8s.io', 'meta.k8s.io', '', [
        { reason: 'FieldValueRequired', field: 'fieldManager', message: 'Required value: is required for apply patch' },
      ]);
    let applied: any;
    try {
      applied = YAML.parse(r.body.toString('utf8'));
    } catch (e) {
      throw errors.badRequest(`error decoding YAML: ${(e as Error).message}`);
    }
    if (!applied || typeof applied !== 'object' || Array.isArray(applied)) throw errors.badRequest('apply patch must be an object');
    if (applied.apiVersion !== apiVersionOf(t) || applied.kind !== t.kind)
      throw errors.badRequest(`apply patch must set apiVersion ${apiVersionOf(t)} and kind ${t.kind}`);
    if (applied.metadata?.name && applied.metadata.name !== r.name)
      throw errors.badRequest(`the name of the object (${applied.metadata.name}) does not match the name on the URL (${r.name})`);
    if (applied.metadata?.managedFields !== undefined)
      throw errors.badRequest('metadata.managedFields must be nil');
    const schema = schemaFor(t);
    const ssa = (live: any | undefined) => {
      try {
        return patch.serverSideApply({ live, applied, manager, force, schema, apiVersion: apiVersionOf(t), now: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'), subresource: r.subresource });
      } catch (e) {
        throw patchError(t, r.name!, e);
      }
    };
    const noManager = { ...opts, fieldManager: undefined };
    const existing = this.objects.tryGet(t, r.namespace, r.name!);
    if (!existing) {
      if (r.subresource) throw errors.notFound(t.group, t.resource, r.name!);
      const created = ssa(undefined);
      created.metadata = { ...created.metadata, name: r.name, namespace: r.namespace };
      try {
        return { code: 201, body: this.objects.create(t, r.namespace, created, noManager), warnings: opts.warnings };
      } catch (e) {
        // Lost a race with another creator: apply to what is there now.
        if (!(e instanceof ApiError && e.reason === 'AlreadyExists')) throw e;
      }
    }
    const obj = this.objects.guaranteedUpdate(t, r.namespace, r.name!, (cur) => ssa(cur), noManager);
    return { code: 200, body: obj, warnings: opts.warnings };
  }

  private deleteOptions(r: ResourceRequest): DeleteOptions {
    const opts: DeleteOptions = this.writeOptions(r);
    let body: any = {};
    if (r.body.length) {
      try {
        body = JSON.parse(r.body.toString('utf8'));
      } catch (e) {
        throw errors.badRequest(`error decoding DeleteOptions: ${(e as Error).message}`);
      }
    }
    const policy = body.propagationPolicy ?? r.query.get('propagationPolicy') ?? (body.orphanDependents === true ? 'Orphan' : undefined);
    if (policy && !['Background', 'Foreground', 'Orphan'].includes(policy))
      throw errors.invalid('DeleteOptions.meta.k8s.io', 'meta.k8s.io', '', [
        { reason: 'FieldValueNotSupported', field: 'propagationPolicy', message: `Unsupported value: "${policy}": supported values: "Foreground", "Background", "Orphan"` },
      ]);
    opts.propagationPolicy = policy;
    opts.orphanDependentsFalse = body.orphanDependents === false || r.query.get('orphanDependents') === 'false';
    opts.preconditions = body.preconditions;
    if (Array.isArray(body.dryRun) && body.dryRun.includes('All')) opts.dryRun = true;
    return opts;
  }

  private delete(r: ResourceRequest): Reply {
    const opts = this.deleteOptions(r);
    const result = this.objects.delete(r.type, r.namespace, r.name!, opts);
    // Upstream answers 202 only for the deprecated orphanDependents=false; everything else is 200.
    const accepted = !result.deleted && !!opts.orphanDependentsFalse;
    return { code: accepted ? 202 : 200, body: result.object };
  }

  private deleteCollection(r: ResourceRequest): Reply {
    const t = r.type;
    const opts = this.deleteOptions(r);
    const match = this.selector(r);
    const gone: any[] = [];
    for (const so of this.objects.listRaw(t, r.namespace)) {
      if (!match(so.obj)) continue;
      try {
        gone.push(this.objects.delete(t, so.obj.metadata.namespace, so.obj.metadata.name, opts).object);
      } catch (e) {
        if (!(e instanceof ApiError && e.code === 404)) throw e;
      }
    }
    return { code: 200, body: { kind: t.listKind, apiVersion: apiVersionOf(t), metadata: { resourceVersion: String(this.backend.currentRevision()) }, items: gone } };
  }

  // ---- scale ----

  private scale(r: ResourceRequest, method: string): Reply {
    const t = r.type;
    const spec = t.scale!;
    const toScale = (obj: any): any => {
      const replicas = crd.evalJsonPath(obj, spec.specReplicasPath);
      if (replicas === undefined && t.crd)
        throw errors.internal(`the spec replicas field ${JSON.stringify(spec.specReplicasPath)} does not exist`);
      const status: any = { replicas: crd.evalJsonPath(obj, spec.statusReplicasPath) ?? 0 };
      const sel = spec.labelSelectorPath ? crd.evalJsonPath(obj, spec.labelSelectorPath) : undefined;
      if (sel !== undefined) status.selector = typeof sel === 'string' ? sel : labelSelectorToString(sel);
      const m = obj.metadata;
      return {
        kind: 'Scale',
        apiVersion: 'autoscaling/v1',
        metadata: { name: m.name, namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion, creationTimestamp: m.creationTimestamp },
        spec: { replicas: replicas ?? 0 },
        status,
      };
    };
    if (method === 'GET') return { code: 200, body: toScale(this.objects.get(t, r.namespace, r.name!)) };
    if (method !== 'PUT' && method !== 'PATCH') throw errors.methodNotAllowed();
    const opts = { ...this.writeOptions(r), subresource: undefined };
    const ct = mediaType(r.req.headers['content-type']);
    let body: any;
    try {
      body = ct === 'application/apply-patch+yaml' ? YAML.parse(r.body.toString('utf8')) : JSON.parse(r.body.toString('utf8'));
    } catch (e) {
      throw errors.badRequest(`error decoding body: ${(e as Error).message}`);
    }
    const updated = this.objects.guaranteedUpdate(
      t,
      r.namespace,
      r.name!,
      (cur) => {
        const scale = toScale(cur);
        let next: any;
        try {
          if (method === 'PUT') next = body;
          else if (ct === 'application/json-patch+json') next = patch.applyJsonPatch(scale, body);
          else next = patch.applyMergePatch(scale, body);
        } catch (e) {
          throw patchError(t, r.name!, e);
        }
        if (next?.metadata?.resourceVersion && next.metadata.resourceVersion !== cur.metadata.resourceVersion)
          throw errors.conflict(t.group, t.resource, r.name!);
        const replicas = next?.spec?.replicas;
        if (!Number.isInteger(replicas) || replicas < 0)
          throw errors.invalid('Scale', 'autoscaling', r.name!, [
            { reason: 'FieldValueInvalid', field: 'spec.replicas', message: `Invalid value: ${JSON.stringify(replicas)}: must be greater than or equal to 0` },
          ]);
        const out = clone(cur);
        setPath(out, spec.specReplicasPath, replicas);
        delete out.metadata.resourceVersion;
        return out;
      },
      opts,
    );
    return { code: 200, body: toScale(updated) };
  }
}

function isWatch(q: URLSearchParams): boolean {
  const w = q.get('watch');
  return w === 'true' || w === '1';
}

export function mediaType(ct: string | undefined): string {
  return (ct ?? '').split(';')[0].trim().toLowerCase();
}

function parseBody(r: ResourceRequest, accepted: string[]): any {
  const ct = mediaType(r.req.headers['content-type']) || 'application/json';
  if (!accepted.includes(ct)) throw errors.unsupportedMediaType(ct, [...accepted, 'application/vnd.kubernetes.protobuf']);
  const text = r.body.toString('utf8');
  if (!text.trim()) throw errors.badRequest('the request body is empty');
  try {
    return ct === 'application/yaml' ? YAML.parse(text) : JSON.parse(text);
  } catch (e) {
    throw errors.badRequest(`the request body could not be decoded: ${(e as Error).message}`);
  }
}

function patchError(t: ResourceType, name: string, e: unknown): unknown {
  if (e instanceof patch.PatchError) {
    if (e.code === 409 && e.reason === 'Conflict' && (e as any).causes) {
      return new ApiError(409, 'Conflict', e.message, {
        name,
        group: t.group || undefined,
        kind: t.resource,
        causes: (e as any).causes,
      });
    }
    if (e.code === 409) return errors.conflict(t.group, t.resource, name);
    return new ApiError(e.code, e.reason, e.message);
  }
  return e;
}

/** Upstream derives the manager from the User-Agent's first segment ("kubectl/v1.32 ..." → "kubectl"). */
function managerFromUserAgent(ua: string | undefined): string {
  if (!ua) return 'unknown';
  return ua.split('/')[0].slice(0, 128) || 'unknown';
}

function encodeContinue(t: { rv: number; start: string }): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv: t.rv, start: t.start })).toString('base64url');
}

function decodeContinue(s: string): { rv: number; start: string } {
  try {
    const t = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
    if (typeof t.rv !== 'number' || typeof t.start !== 'string') throw new Error('bad token');
    return t;
  } catch {
    throw errors.badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
  }
}

function setPath(obj: any, path: string, value: any): void {
  const parts = path.replace(/^\./, '').split('.');
  let cur = obj;
  for (const p of parts.slice(0, -1)) cur = cur[p] ??= {};
  cur[parts[parts.length - 1]] = value;
}
