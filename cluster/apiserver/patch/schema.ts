/**
 * Schema hints for list and map semantics, in OpenAPI v3 form.
 *
 * One vocabulary serves both consumers:
 *  - server-side apply reads `x-kubernetes-list-type` (atomic|set|map), `x-kubernetes-list-map-keys`
 *    and `x-kubernetes-map-type` (atomic|granular), as a CRD's openAPIV3Schema carries them;
 *  - strategic merge patch reads `x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key`,
 *    the extensions kube-apiserver publishes for the `patchStrategy`/`patchMergeKey` struct tags.
 *
 * For built-in kinds we only describe the fields whose semantics differ from the defaults
 * (maps granular, lists atomic / replaced), taken from the k8s.io/api struct tags.
 */
import { Json, isObject } from './json';

const LIST_TYPE = 'x-kubernetes-list-type';
const LIST_MAP_KEYS = 'x-kubernetes-list-map-keys';
const MAP_TYPE = 'x-kubernetes-map-type';
const PATCH_STRATEGY = 'x-kubernetes-patch-strategy';
const PATCH_MERGE_KEY = 'x-kubernetes-patch-merge-key';

// ---- builders -------------------------------------------------------------------------------

function object(properties: Record<string, Json>, extra: Record<string, Json> = {}): Json {
  return { type: 'object', properties, ...extra };
}

/** A list merged by SMP on `key` and treated by SSA as a map list keyed by `key`. */
function mapList(key: string, itemProperties: Record<string, Json> = {}, strategy = 'merge'): Json {
  return {
    type: 'array',
    [LIST_TYPE]: 'map',
    [LIST_MAP_KEYS]: [key],
    [PATCH_STRATEGY]: strategy,
    [PATCH_MERGE_KEY]: key,
    items: object(itemProperties),
  };
}

/** A list of scalars merged as a set (SMP `patchStrategy: merge` without a merge key). */
function setList(): Json {
  return { type: 'array', [LIST_TYPE]: 'set', [PATCH_STRATEGY]: 'merge', items: { type: 'string' } };
}

/** A struct or map owned and replaced as a whole by SSA (e.g. label selectors). */
function atomicMap(): Json {
  return { type: 'object', [MAP_TYPE]: 'atomic' };
}

const conditions = (): Json => mapList('type');

function objectMeta(): Json {
  return object({
    finalizers: setList(),
    ownerReferences: mapList('uid'),
  });
}

function container(): Json {
  return {
    env: mapList('name'),
    ports: mapList('containerPort'),
    volumeMounts: mapList('mountPath'),
    volumeDevices: mapList('devicePath'),
  };
}

function podSpec(): Json {
  return object({
    containers: mapList('name', container()),
    initContainers: mapList('name', container()),
    ephemeralContainers: mapList('name', container()),
    volumes: mapList('name', {}, 'merge,retainKeys'),
    imagePullSecrets: mapList('name'),
    hostAliases: mapList('ip'),
    topologySpreadConstraints: mapList('topologyKey'),
    schedulingGates: mapList('name'),
    resourceClaims: mapList('name', {}, 'merge,retainKeys'),
    nodeSelector: atomicMap(),
  });
}

function podTemplate(): Json {
  return object({ metadata: objectMeta(), spec: podSpec() });
}

function podStatus(): Json {
  return object({
    conditions: conditions(),
    podIPs: mapList('ip'),
    hostIPs: mapList('ip'),
    resourceClaimStatuses: mapList('name'),
  });
}

/** Deployment, DaemonSet, ReplicaSet, StatefulSet: pod template plus an atomic label selector. */
function workload(specExtra: Record<string, Json> = {}): Json {
  return {
    spec: object({ selector: atomicMap(), template: podTemplate(), ...specExtra }),
    status: object({ conditions: conditions() }),
  };
}

/** Top-level properties (besides metadata) per "group/Kind". */
const KINDS: Record<string, () => Record<string, Json>> = {
  '/Pod': () => ({ spec: podSpec(), status: podStatus() }),
  '/PodTemplate': () => ({ template: podTemplate() }),
  '/ReplicationController': () => ({
    spec: object({ template: podTemplate() }),
    status: object({ conditions: conditions() }),
  }),
  '/Service': () => ({
    spec: object({ ports: mapList('port'), selector: atomicMap() }),
    status: object({ conditions: conditions() }),
  }),
  '/Node': () => ({
    spec: object({ podCIDRs: setList() }),
    status: object({ conditions: conditions(), addresses: mapList('type') }),
  }),
  '/Namespace': () => ({ status: object({ conditions: conditions() }) }),
  '/ServiceAccount': () => ({ secrets: mapList('name') }),
  'apps/Deployment': () => workload({ strategy: { type: 'object', [PATCH_STRATEGY]: 'retainKeys' } }),
  'apps/DaemonSet': () => workload(),
  'apps/ReplicaSet': () => workload(),
  'apps/StatefulSet': () => workload(),
  'batch/Job': () => ({
    spec: object({ selector: atomicMap(), template: podTemplate() }),
    status: object({ conditions: conditions() }),
  }),
  'batch/CronJob': () => ({
    spec: object({
      jobTemplate: object({ metadata: objectMeta(), spec: object({ selector: atomicMap(), template: podTemplate() }) }),
    }),
  }),
};

/**
 * Schema for a built-in kind. Unknown kinds (including custom resources) get only the
 * ObjectMeta hints, which apply to every object.
 */
export function builtinSchema(group: string, kind: string): Json {
  const props = KINDS[`${group}/${kind}`]?.() ?? {};
  return object({ ...props, metadata: objectMeta() });
}

/**
 * The schema actually used for an object: the given one (a CRD version's openAPIV3Schema, or a
 * built-in schema), or the built-in schema derived from the object's apiVersion/kind. ObjectMeta
 * semantics are always the standard ones, as CRD schemas do not describe metadata.
 */
export function effectiveSchema(schema: Json | undefined, obj: Json): Json {
  if (schema === undefined) return builtinSchema(groupOf(obj?.apiVersion), String(obj?.kind ?? ''));
  if (!isObject(schema)) return builtinSchema('', '');
  return { ...schema, properties: { ...(schema.properties ?? {}), metadata: objectMeta() } };
}

export function groupOf(apiVersion: unknown): string {
  if (typeof apiVersion !== 'string') return '';
  const slash = apiVersion.indexOf('/');
  return slash < 0 ? '' : apiVersion.slice(0, slash);
}

// ---- navigation -----------------------------------------------------------------------------

/** Schema of `key` inside an object schema (declared property, else additionalProperties). */
export function fieldSchema(schema: Json, key: string): Json {
  if (!isObject(schema)) return undefined;
  const props = schema.properties;
  if (isObject(props) && isObject(props[key])) return props[key];
  if (isObject(schema.additionalProperties)) return schema.additionalProperties;
  return undefined;
}

export function itemSchema(schema: Json): Json {
  return isObject(schema) && isObject(schema.items) ? schema.items : undefined;
}

export function isAtomicMap(schema: Json): boolean {
  return isObject(schema) && schema[MAP_TYPE] === 'atomic';
}

export type ListKind = { type: 'atomic' } | { type: 'set' } | { type: 'map'; keys: string[] };

/** SSA list semantics as declared by the schema (lists are atomic unless marked). */
export function declaredListKind(schema: Json): ListKind {
  if (!isObject(schema)) return { type: 'atomic' };
  const t = schema[LIST_TYPE];
  if (t === 'set') return { type: 'set' };
  const keys = schema[LIST_MAP_KEYS];
  if (t === 'map' && Array.isArray(keys) && keys.length > 0 && keys.every((k) => typeof k === 'string')) {
    return { type: 'map', keys };
  }
  return { type: 'atomic' };
}

export interface PatchMeta {
  merge: boolean;
  mergeKey?: string;
}

/** SMP metadata of a field: does the list merge, and on which key. */
export function patchMeta(schema: Json): PatchMeta {
  if (!isObject(schema)) return { merge: false };
  const strategies = String(schema[PATCH_STRATEGY] ?? '').split(',');
  const key = schema[PATCH_MERGE_KEY];
  return { merge: strategies.includes('merge'), mergeKey: typeof key === 'string' ? key : undefined };
}
