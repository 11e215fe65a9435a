import { createHash } from 'node:crypto';
import { Registry, ResourceType } from './registry';

/**
 * Discovery documents. Legacy (APIVersions, APIGroupList, APIResourceList) and
 * aggregated (apidiscovery.k8s.io v2 and v2beta1), chosen by the Accept header:
 * the first type in the client's list that we support wins and we never answer
 * 406, since kubectl does not retry after one.
 */
export const AGGREGATED_V2 = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList';
export const AGGREGATED_V2BETA1 = 'application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList';

export type DiscoveryFormat = 'v2' | 'v2beta1' | 'legacy';

export function negotiateDiscovery(accept: string | undefined): DiscoveryFormat {
  for (const part of (accept ?? '').split(',')) {
    const params = new Map<string, string>();
    const [type, ...rest] = part.split(';').map((s) => s.trim());
    for (const p of rest) {
      const [k, v] = p.split('=');
      params.set(k?.trim(), v?.trim());
    }
    if (type === 'application/json' && params.get('g') === 'apidiscovery.k8s.io' && params.get('as') === 'APIGroupDiscoveryList') {
      if (params.get('v') === 'v2') return 'v2';
      if (params.get('v') === 'v2beta1') return 'v2beta1';
      continue;
    }
    if (type === 'application/json' || type === '*/*' || type === 'application/*' || type === '') return 'legacy';
  }
  return 'legacy';
}

export function apiVersions(serverAddress: string): any {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

export function apiGroupList(reg: Registry): any {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: reg.groups().map((g) => apiGroup(g)) };
}

export function apiGroup(g: { name: string; versions: string[] }): any {
  const versions = g.versions.map((v) => ({ groupVersion: `${g.name}/${v}`, version: v }));
  return { kind: 'APIGroup', apiVersion: 'v1', name: g.name, versions, preferredVersion: versions[0] };
}

export function apiResourceList(reg: Registry, group: string, version: string): any | undefined {
  const types = reg.typesIn(group, version);
  if (!types.length) return undefined;
  const resources: any[] = [];
  for (const t of types) {
    const r: any = {
      name: t.resource,
      singularName: t.singular,
      namespaced: t.namespaced,
      kind: t.kind,
      verbs: t.verbs,
      storageVersionHash: storageVersionHash(t),
    };
    if (t.shortNames.length) r.shortNames = t.shortNames;
    if (t.categories.length) r.categories = t.categories;
    resources.push(r);
    for (const sub of t.subresources) resources.push(subresourceEntry(t, sub));
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
}

function subresourceEntry(t: ResourceType, sub: string): any {
  if (sub === 'scale')
    return { name: `${t.resource}/scale`, singularName: '', namespaced: t.namespaced, group: 'autoscaling', version: 'v1', kind: 'Scale', verbs: ['get', 'patch', 'update'] };
  if (sub === 'finalize') return { name: `${t.resource}/finalize`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: ['update'] };
  return { name: `${t.resource}/${sub}`, singularName: '', namespaced: t.namespaced, kind: t.kind, verbs: ['get', 'patch', 'update'] };
}

function storageVersionHash(t: ResourceType): string {
  return createHash('sha256').update(`${t.storageGroup}/${t.version}/${t.kind}`).digest('base64').slice(0, 11);
}

/** `/api` (core only) or `/apis` (all named groups) as an APIGroupDiscoveryList. */
export function aggregated(reg: Registry, core: boolean, format: 'v2' | 'v2beta1'): any {
  const groups = core ? [{ name: '', versions: ['v1'] }] : reg.groups();
  const items = groups.map((g) => ({
    metadata: { name: g.name, ...(core ? {} : {}) },
    versions: g.versions.map((v) => ({
      version: v,
      freshness: 'Current',
      resources: reg.typesIn(g.name, v).map((t) => {
        const r: any = {
          resource: t.resource,
          responseKind: { group: t.group, version: t.version, kind: t.kind },
          scope: t.namespaced ? 'Namespaced' : 'Cluster',
          singularResource: t.singular,
          verbs: t.verbs,
        };
        if (t.shortNames.length) r.shortNames = t.shortNames;
        if (t.categories.length) r.categories = t.categories;
        if (t.subresources.length)
          r.subresources = t.subresources.map((s) => ({
            subresource: s,
            responseKind:
              s === 'scale' ? { group: 'autoscaling', version: 'v1', kind: 'Scale' } : { group: t.group, version: t.version, kind: t.kind },
            verbs: s === 'finalize' ? ['update'] : ['get', 'patch', 'update'],
          }));
        return r;
      }),
    })),
  }));
  if (core) items[0].metadata = { name: '' } as any;
  return {
    kind: 'APIGroupDiscoveryList',
    apiVersion: `apidiscovery.k8s.io/${format}`,
    metadata: {},
    items,
  };
}
