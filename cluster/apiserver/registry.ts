/**
 * The resource types the server serves: the built-in kinds (a fixed table) and
 * one entry per served version of every established CustomResourceDefinition.
 * Discovery, OpenAPI, routing and storage keys are all derived from here.
 */
export interface ScaleSpec {
  specReplicasPath: string;
  statusReplicasPath: string;
  labelSelectorPath?: string;
}

export interface ResourceType {
  group: string;
  version: string;
  resource: string;
  kind: string;
  listKind: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  verbs: string[];
  /** Subresources served besides the main resource. */
  subresources: string[];
  /** True when `status` is a subresource: the main endpoint ignores status, /status ignores the rest. */
  statusSubresource: boolean;
  scale?: ScaleSpec;
  /** Storage group/resource; differs for events.k8s.io events, stored as core events. */
  storageGroup: string;
  storageResource: string;
  /** Preferred-version order inside the group (lower is preferred). */
  versionPriority: number;
  /** Built-ins accept a PUT without resourceVersion; custom resources do not. */
  allowUnconditionalUpdate: boolean;
  /** The DNS rule for names. */
  nameRule: 'subdomain' | 'label' | 'label1035' | 'path';
  /** Set for custom resources. */
  crd?: any;
  /** For custom resources: additionalPrinterColumns of this version. */
  printerColumns?: any[];
  /** For custom resources: extra selectable field paths. */
  selectableFields?: string[];
}

const BUILTIN_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
export const CR_VERBS = ['delete', 'deletecollection', 'get', 'list', 'patch', 'create', 'update', 'watch'];

function builtin(
  group: string,
  version: string,
  resource: string,
  kind: string,
  opts: Partial<ResourceType> & { namespaced: boolean },
): ResourceType {
  return {
    group,
    version,
    resource,
    kind,
    listKind: `${kind}List`,
    singular: kind.toLowerCase(),
    shortNames: [],
    categories: [],
    verbs: BUILTIN_VERBS,
    subresources: [],
    statusSubresource: false,
    storageGroup: group,
    storageResource: resource,
    versionPriority: 0,
    allowUnconditionalUpdate: true,
    nameRule: 'subdomain',
    ...opts,
  };
}

export const BUILTIN_TYPES: ResourceType[] = [
  builtin('', 'v1', 'namespaces', 'Namespace', {
    namespaced: false,
    shortNames: ['ns'],
    subresources: ['status', 'finalize'],
    statusSubresource: true,
    nameRule: 'label',
  }),
  builtin('', 'v1', 'configmaps', 'ConfigMap', { namespaced: true, shortNames: ['cm'] }),
  builtin('', 'v1', 'secrets', 'Secret', { namespaced: true }),
  builtin('', 'v1', 'serviceaccounts', 'ServiceAccount', { namespaced: true, shortNames: ['sa'] }),
  builtin('', 'v1', 'services', 'Service', {
    namespaced: true,
    shortNames: ['svc'],
    categories: ['all'],
    subresources: ['status'],
    statusSubresource: true,
    nameRule: 'label1035',
  }),
  builtin('', 'v1', 'nodes', 'Node', {
    namespaced: false,
    shortNames: ['no'],
    subresources: ['status'],
    statusSubresource: true,
  }),
  builtin('', 'v1', 'pods', 'Pod', {
    namespaced: true,
    shortNames: ['po'],
    categories: ['all'],
    subresources: ['status'],
    statusSubresource: true,
  }),
  builtin('', 'v1', 'events', 'Event', { namespaced: true, shortNames: ['ev'] }),
  builtin('events.k8s.io', 'v1', 'events', 'Event', {
    namespaced: true,
    shortNames: ['ev'],
    storageGroup: '',
    storageResource: 'events',
  }),
  builtin('apps', 'v1', 'deployments', 'Deployment', {
    namespaced: true,
    shortNames: ['deploy'],
    categories: ['all'],
    subresources: ['status', 'scale'],
    statusSubresource: true,
    scale: { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas', labelSelectorPath: '.status.selector' },
  }),
  builtin('apps', 'v1', 'daemonsets', 'DaemonSet', {
    namespaced: true,
    shortNames: ['ds'],
    categories: ['all'],
    subresources: ['status'],
    statusSubresource: true,
  }),
  builtin('coordination.k8s.io', 'v1', 'leases', 'Lease', { namespaced: true }),
  builtin('rbac.authorization.k8s.io', 'v1', 'roles', 'Role', { namespaced: true, nameRule: 'path' }),
  builtin('rbac.authorization.k8s.io', 'v1', 'rolebindings', 'RoleBinding', { namespaced: true, nameRule: 'path' }),
  builtin('rbac.authorization.k8s.io', 'v1', 'clusterroles', 'ClusterRole', { namespaced: false, nameRule: 'path' }),
  builtin('rbac.authorization.k8s.io', 'v1', 'clusterrolebindings', 'ClusterRoleBinding', {
    namespaced: false,
    nameRule: 'path',
  }),
  builtin('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', 'CustomResourceDefinition', {
    namespaced: false,
    shortNames: ['crd', 'crds'],
    categories: ['api-extensions'],
    subresources: ['status'],
    statusSubresource: true,
  }),
];

/** Types derived from one CRD: one per served version. */
export function typesFromCrd(crd: any): ResourceType[] {
  const spec = crd.spec ?? {};
  const names = spec.names ?? {};
  const served = (spec.versions ?? []).filter((v: any) => v.served !== false);
  const ordered = sortVersions(served.map((v: any) => v.name));
  return served.map((v: any) => {
    const subs: string[] = [];
    if (v.subresources?.status) subs.push('status');
    if (v.subresources?.scale) subs.push('scale');
    return {
      group: spec.group,
      version: v.name,
      resource: names.plural,
      kind: names.kind,
      listKind: names.listKind ?? `${names.kind}List`,
      singular: names.singular ?? String(names.kind).toLowerCase(),
      namespaced: spec.scope !== 'Cluster',
      shortNames: names.shortNames ?? [],
      categories: names.categories ?? [],
      verbs: CR_VERBS,
      subresources: subs,
      statusSubresource: !!v.subresources?.status,
      scale: v.subresources?.scale,
      storageGroup: spec.group,
      storageResource: names.plural,
      versionPriority: ordered.indexOf(v.name),
      allowUnconditionalUpdate: false,
      nameRule: 'subdomain',
      crd,
      printerColumns: v.additionalPrinterColumns ?? [],
      selectableFields: (v.selectableFields ?? []).map((f: any) => f.jsonPath),
    } satisfies ResourceType;
  });
}

/**
 * Kubernetes version priority: GA > beta > alpha, higher numbers first, then
 * non-conforming names alphabetically.
 */
export function sortVersions(versions: string[]): string[] {
  const rank = (v: string): [number, number, number, string] => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return [3, 0, 0, v];
    const stage = m[2] === 'alpha' ? 2 : m[2] === 'beta' ? 1 : 0;
    return [stage, -Number(m[1]), -Number(m[3] ?? 0), v];
  };
  return [...versions].sort((a, b) => {
    const ra = rank(a);
    const rb = rank(b);
    for (let i = 0; i < 3; i++) if (ra[i] !== rb[i]) return (ra[i] as number) - (rb[i] as number);
    return ra[3] < rb[3] ? -1 : ra[3] > rb[3] ? 1 : 0;
  });
}

export class Registry {
  private crdTypes = new Map<string, ResourceType[]>(); // by CRD name
  private generation = 0;

  /** Bumped whenever the set of types changes; discovery and OpenAPI caches key on it. */
  get version(): number {
    return this.generation;
  }

  setCrd(crd: any): void {
    this.crdTypes.set(crd.metadata.name, typesFromCrd(crd));
    this.generation++;
  }

  removeCrd(name: string): void {
    if (this.crdTypes.delete(name)) this.generation++;
  }

  all(): ResourceType[] {
    const out = [...BUILTIN_TYPES];
    for (const ts of this.crdTypes.values()) out.push(...ts);
    return out;
  }

  find(group: string, version: string, resource: string): ResourceType | undefined {
    if (group === 'apiextensions.k8s.io' || group === '' || BUILTIN_GROUPS.has(group)) {
      const b = BUILTIN_TYPES.find((t) => t.group === group && t.version === version && t.resource === resource);
      if (b) return b;
    }
    for (const ts of this.crdTypes.values())
      for (const t of ts) if (t.group === group && t.version === version && t.resource === resource) return t;
    return undefined;
  }

  /** The preferred served version of the CRD behind a type (used when the controller acts on objects). */
  byKind(group: string, kind: string): ResourceType | undefined {
    const candidates = this.all().filter((t) => t.group === group && t.kind === kind);
    candidates.sort((a, b) => a.versionPriority - b.versionPriority);
    return candidates[0];
  }

  /** The preferred type stored under a storage group/resource (keys carry no version). */
  byStorage(storageGroup: string, storageResource: string): ResourceType | undefined {
    const candidates = this.all().filter(
      (t) => t.storageGroup === storageGroup && t.storageResource === storageResource && t.group === storageGroup,
    );
    candidates.sort((a, b) => a.versionPriority - b.versionPriority);
    return candidates[0];
  }

  /** Groups with their versions in preference order; core group excluded. */
  groups(): { name: string; versions: string[] }[] {
    const map = new Map<string, ResourceType[]>();
    for (const t of this.all()) {
      if (!t.group) continue;
      if (!map.has(t.group)) map.set(t.group, []);
      map.get(t.group)!.push(t);
    }
    return [...map.entries()].map(([name, ts]) => {
      const versions = [...new Set(ts.sort((a, b) => a.versionPriority - b.versionPriority).map((t) => t.version))];
      return { name, versions };
    });
  }

  typesIn(group: string, version: string): ResourceType[] {
    return this.all().filter((t) => t.group === group && t.version === version);
  }
}

const BUILTIN_GROUPS = new Set(BUILTIN_TYPES.map((t) => t.group));

/** The storage key prefix of a type, optionally within a namespace. */
export function keyPrefix(t: ResourceType, namespace?: string): string {
  const base = `/${t.storageGroup || 'core'}/${t.storageResource}/`;
  if (!t.namespaced) return base;
  return namespace ? `${base}${namespace}/` : base;
}

export function objectKey(t: ResourceType, namespace: string | undefined, name: string): string {
  return t.namespaced ? `/${t.storageGroup || 'core'}/${t.storageResource}/${namespace}/${name}` : `/${t.storageGroup || 'core'}/${t.storageResource}/${name}`;
}
