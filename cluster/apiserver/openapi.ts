import { createHash } from 'node:crypto';
import { Registry, ResourceType } from './registry';
import * as crd from './crd';

/**
 * `/openapi/v3`: an index of group-version documents and the documents
 * themselves. kubectl apply/create/replace look here for a PATCH operation of
 * the object's GVK that declares the `fieldValidation` parameter, and then
 * leave validation to us. Custom resources carry their schema in
 * components.schemas so `kubectl explain` works. Built-in kinds deliberately
 * have no component schema: kubectl then uses its compiled-in types to build
 * strategic merge patches, which carry the right merge keys.
 */
export class OpenApi {
  private cacheVersion = -1;
  private docs = new Map<string, { body: string; hash: string }>();

  constructor(private readonly registry: Registry) {}

  private refresh(): void {
    if (this.cacheVersion === this.registry.version) return;
    this.docs.clear();
    const gvs = new Map<string, ResourceType[]>();
    for (const t of this.registry.all()) {
      const path = t.group ? `apis/${t.group}/${t.version}` : `api/${t.version}`;
      if (!gvs.has(path)) gvs.set(path, []);
      gvs.get(path)!.push(t);
    }
    for (const [path, types] of gvs) {
      const body = JSON.stringify(document(types));
      this.docs.set(path, { body, hash: createHash('sha512').update(body).digest('hex').slice(0, 64).toUpperCase() });
    }
    this.cacheVersion = this.registry.version;
  }

  index(): any {
    this.refresh();
    const paths: Record<string, any> = {};
    for (const [p, d] of this.docs) paths[p] = { serverRelativeURL: `/openapi/v3/${p}?hash=${d.hash}` };
    return { paths };
  }

  /** The document for `api/v1` or `apis/<g>/<v>`, serialised, or undefined. */
  document(path: string): string | undefined {
    this.refresh();
    return this.docs.get(path)?.body;
  }
}

const FIELD_VALIDATION = {
  name: 'fieldValidation',
  in: 'query',
  description:
    'fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn or Strict.',
  schema: { type: 'string', uniqueItems: true },
};
const DRY_RUN = { name: 'dryRun', in: 'query', schema: { type: 'string', uniqueItems: true } };
const FIELD_MANAGER = { name: 'fieldManager', in: 'query', schema: { type: 'string', uniqueItems: true } };

function document(types: ResourceType[]): any {
  const paths: Record<string, any> = {};
  const schemas: Record<string, any> = {};
  for (const t of types) {
    const gvk = { group: t.group, version: t.version, kind: t.kind };
    const base = `/${t.group ? `apis/${t.group}` : 'api'}/${t.version}${t.namespaced ? '/namespaces/{namespace}' : ''}/${t.resource}`;
    const ref = schemaName(t);
    const body = { content: { 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } } };
    const ok = { description: 'OK', content: { 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } } };
    const op = (action: string, extra: any = {}) => ({
      operationId: `${action}${t.kind}`,
      'x-kubernetes-action': action,
      'x-kubernetes-group-version-kind': gvk,
      responses: { '200': ok },
      ...extra,
    });
    paths[base] = {
      get: op('list'),
      post: op('post', { parameters: [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION], requestBody: body }),
    };
    paths[`${base}/{name}`] = {
      get: op('get'),
      put: op('put', { parameters: [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION], requestBody: body }),
      patch: op('patch', {
        parameters: [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, { name: 'force', in: 'query', schema: { type: 'boolean' } }],
        requestBody: { content: { 'application/json-patch+json': { schema: { type: 'object' } }, 'application/merge-patch+json': { schema: { type: 'object' } }, 'application/apply-patch+yaml': { schema: { type: 'object' } } } },
      }),
      delete: op('delete'),
    };
    for (const sub of t.subresources) {
      paths[`${base}/{name}/${sub}`] = {
        get: op('get'),
        put: op('put', { parameters: [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION], requestBody: body }),
        patch: op('patch', { parameters: [DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION] }),
      };
    }
    if (t.crd) schemas[ref] = crd.openApiSchemaFor(t.crd, t.version);
  }
  return {
    openapi: '3.0.0',
    info: { title: 'Kubernetes', version: 'v1.32.4' },
    paths,
    components: { schemas },
  };
}

/** Upstream names component schemas by reversed group: `dev.kubevm.v1alpha1.VirtualMachine`. */
function schemaName(t: ResourceType): string {
  const g = t.group ? t.group.split('.').reverse().join('.') : 'io.k8s.api.core';
  return `${g}.${t.version}.${t.kind}`;
}
