import * as path from 'node:path';
import { allCrds } from '../../controller/api/crds';
import { GROUP, NAME_PATTERN } from '../../controller/api/schema';
import { isNotFound, type Gvr, type Kube } from '../../controller/runtime/kube';
import { applyIgnoreChanges, diffInputs } from '../diff';
import type { Failure } from '../spec-schema';
import { clone, deepEqual, isObject, plain, UNKNOWN, withoutUnknowns, type Json } from '../values';
import { waitFor, WaitError, type Verdict } from '../wait';
import { InitFailedError, parseId, type CheckOutcome, type DiffOutcome, type OpContext, type Props } from './common';
import { INSTALL_CONFIGMAP, INSTALL_DEFAULT_NAMESPACE, INSTALL_INPUTS, INSTALL_OUTPUTS, INSTALL_TOKEN } from './install-schema';

/**
 * kubevm:index:Install: deploys kubevm into a cluster. It has no CRD of its own;
 * its record is the ConfigMap `<namespace>/kubevm-config` (the id), which holds
 * the configuration the controller and agents read (`config.json`) and, in
 * annotations, the inputs and the mode applied, so Read, import and Delete work
 * from the cluster alone.
 *
 * Everything is written with server-side apply (field manager kubevm-install,
 * forced: the Install owns these objects), so applying again is a no-op; objects
 * an earlier apply made that the current inputs no longer want (the workloads
 * after a switch to embedded mode) are pruned by their labels.
 *
 * Modes: on kubevm's embedded cluster (its /version says `kubevm: embedded`) the
 * controller and the node agents run inside the cluster process, so only the
 * CRDs, the namespace and the ConfigMap are applied. In cluster mode RBAC, the
 * controller Deployment and the privileged agent DaemonSet are applied too.
 */
const FIELD_MANAGER = 'kubevm-install';
const INSTALL_LABEL = 'kubevm.dev/install';
const CREATED_BY = 'kubevm.dev/created-by';
const INPUTS_ANNOTATION = 'kubevm.dev/install-inputs';
const STATE_ANNOTATION = 'kubevm.dev/install-state';
const CONTROLLER = 'kubevm-controller';
const AGENT = 'kubevm-agent';
const SERVICE_ACCOUNT = 'kubevm';
const CONFIG_MOUNT = '/etc/kubevm';

const INPUT_KEYS = Object.keys(INSTALL_INPUTS);
const OUTPUT_KEYS = Object.keys(INSTALL_OUTPUTS);
const NAME_RE = new RegExp(NAME_PATTERN);

type Mode = 'embedded' | 'cluster';

/** The inputs with defaults applied. */
export interface InstallSettings {
  namespace: string;
  mode: 'auto' | Mode;
  image?: string;
  backend: 'qemu' | 'sim';
  allowedRoots: string[];
  dataDir: string;
  nodeSelector?: Record<string, string>;
  waitForRollout: boolean;
  removeCrds: boolean;
}

/** What an apply produced: the status outputs. */
export interface InstallOutcome {
  effectiveMode: Mode;
  crds: string[];
  components: string[];
  message: string;
  ownsNamespace: boolean;
}

const gvr = (group: string, version: string, plural: string, namespaced: boolean): Gvr => ({
  group,
  version,
  plural,
  namespaced,
});
const KIND_GVR: Record<string, Gvr> = {
  Namespace: gvr('', 'v1', 'namespaces', false),
  ConfigMap: gvr('', 'v1', 'configmaps', true),
  ServiceAccount: gvr('', 'v1', 'serviceaccounts', true),
  ClusterRole: gvr('rbac.authorization.k8s.io', 'v1', 'clusterroles', false),
  ClusterRoleBinding: gvr('rbac.authorization.k8s.io', 'v1', 'clusterrolebindings', false),
  Deployment: gvr('apps', 'v1', 'deployments', true),
  DaemonSet: gvr('apps', 'v1', 'daemonsets', true),
  CustomResourceDefinition: gvr('apiextensions.k8s.io', 'v1', 'customresourcedefinitions', false),
};
/** Components in the order they are applied; deleted in reverse. */
const COMPONENT_KINDS = [
  'Namespace',
  'ServiceAccount',
  'ClusterRole',
  'ClusterRoleBinding',
  'Deployment',
  'DaemonSet',
  'ConfigMap',
];

function objectPath(kind: string, namespace: string | undefined, name: string): string {
  const g = KIND_GVR[kind];
  const root = g.group ? `/apis/${g.group}/${g.version}` : `/api/${g.version}`;
  return `${root}${g.namespaced ? `/namespaces/${namespace}` : ''}/${g.plural}/${name}`;
}

export const crdNames = (): string[] => allCrds().map((c) => c.metadata.name as string);

const componentName = (o: any): string =>
  o.metadata.namespace ? `${o.kind}/${o.metadata.namespace}/${o.metadata.name}` : `${o.kind}/${o.metadata.name}`;
const clusterRoleName = (ns: string): string => `kubevm:${ns}`;

export function settingsOf(p: Props): InstallSettings {
  const out: Record<string, Json> = {};
  for (const [k, f] of Object.entries(INSTALL_INPUTS)) out[k] = p[k] ?? clone(f.default);
  if (isObject(out.nodeSelector) && Object.keys(out.nodeSelector).length === 0) delete out.nodeSelector;
  return out as InstallSettings;
}

// ---- manifests ------------------------------------------------------------------

function labels(ns: string, component: string): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'kubevm',
    'app.kubernetes.io/component': component,
    'app.kubernetes.io/managed-by': FIELD_MANAGER,
    [INSTALL_LABEL]: ns,
  };
}

/** The configuration the controller and the agents read from `config.json`. */
export function runtimeConfig(s: InstallSettings, mode: Mode): Record<string, Json> {
  return { namespace: s.namespace, mode, backend: s.backend, allowedRoots: s.allowedRoots, dataDir: s.dataDir };
}

function configMap(s: InstallSettings, mode: Mode, inputs: Props, message: string): any {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: INSTALL_CONFIGMAP,
      namespace: s.namespace,
      labels: labels(s.namespace, 'config'),
      annotations: {
        [INPUTS_ANNOTATION]: JSON.stringify(inputs),
        [STATE_ANNOTATION]: JSON.stringify({ effectiveMode: mode, message }),
      },
    },
    data: { 'config.json': `${JSON.stringify(runtimeConfig(s, mode), null, 2)}\n` },
  };
}

/** RBAC, the controller Deployment and the agent DaemonSet (cluster mode). */
export function clusterManifests(s: InstallSettings): any[] {
  const ns = s.namespace;
  const image = s.image!;
  const configVolume = { name: 'config', configMap: { name: INSTALL_CONFIGMAP } };
  const configMount = { name: 'config', mountPath: CONFIG_MOUNT, readOnly: true };
  const configArg = ['--config', `${CONFIG_MOUNT}/config.json`];
  const workload = (component: string) => ({
    'app.kubernetes.io/name': 'kubevm',
    'app.kubernetes.io/component': component,
    [INSTALL_LABEL]: ns,
  });
  // Host paths appear in the agent at the same paths: volume files and shares are named by host path in statuses.
  const hostDirs = [...new Set([s.dataDir, ...s.allowedRoots])];
  const hostVolumes = hostDirs.map((dir, i) => ({ name: `host-${i}`, hostPath: { path: dir, type: 'DirectoryOrCreate' } }));
  const hostMounts = hostDirs.map((dir, i) => ({ name: `host-${i}`, mountPath: dir }));
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: SERVICE_ACCOUNT, namespace: ns, labels: labels(ns, 'rbac') } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: clusterRoleName(ns), labels: labels(ns, 'rbac') },
      rules: [
        { apiGroups: [GROUP], resources: ['*'], verbs: ['*'] },
        { apiGroups: [''], resources: ['nodes', 'nodes/status'], verbs: ['get', 'list', 'watch', 'create', 'update', 'patch'] },
        {
          apiGroups: ['coordination.k8s.io'],
          resources: ['leases'],
          verbs: ['get', 'list', 'watch', 'create', 'update', 'patch'],
        },
        { apiGroups: ['', 'events.k8s.io'], resources: ['events'], verbs: ['get', 'list', 'watch', 'create', 'update', 'patch'] },
        // cloud-init user data may come from a Secret (userDataSecretRef).
        { apiGroups: [''], resources: ['secrets', 'configmaps'], verbs: ['get', 'list', 'watch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: clusterRoleName(ns), labels: labels(ns, 'rbac') },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRoleName(ns) },
      subjects: [{ kind: 'ServiceAccount', name: SERVICE_ACCOUNT, namespace: ns }],
    },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: CONTROLLER, namespace: ns, labels: labels(ns, 'controller') },
      spec: {
        replicas: 1,
        selector: { matchLabels: workload('controller') },
        template: {
          metadata: { labels: workload('controller') },
          spec: {
            serviceAccountName: SERVICE_ACCOUNT,
            containers: [
              { name: 'controller', image, command: ['kubevm', 'controller', ...configArg], volumeMounts: [configMount] },
            ],
            volumes: [configVolume],
          },
        },
      },
    },
    {
      apiVersion: 'apps/v1',
      kind: 'DaemonSet',
      metadata: { name: AGENT, namespace: ns, labels: labels(ns, 'agent') },
      spec: {
        selector: { matchLabels: workload('agent') },
        template: {
          metadata: { labels: workload('agent') },
          spec: {
            serviceAccountName: SERVICE_ACCOUNT,
            // Linux bridges for `type: bridge` Networks and passt live in the node's network namespace.
            hostNetwork: true,
            dnsPolicy: 'ClusterFirstWithHostNet',
            ...(s.nodeSelector ? { nodeSelector: s.nodeSelector } : {}),
            containers: [
              {
                name: 'agent',
                image,
                command: ['kubevm', 'agent', ...configArg, '--node', '$(NODE_NAME)'],
                env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
                securityContext: { privileged: true },
                volumeMounts: [
                  configMount,
                  { name: 'dev-kvm', mountPath: '/dev/kvm' },
                  { name: 'dev-net-tun', mountPath: '/dev/net/tun' },
                  ...hostMounts,
                ],
              },
            ],
            volumes: [
              configVolume,
              { name: 'dev-kvm', hostPath: { path: '/dev/kvm', type: 'CharDevice' } },
              { name: 'dev-net-tun', hostPath: { path: '/dev/net/tun', type: 'CharDevice' } },
              ...hostVolumes,
            ],
          },
        },
      },
    },
  ];
}

// ---- the cluster ----------------------------------------------------------------------

async function apply(kube: Kube, obj: any): Promise<any> {
  const p = objectPath(obj.kind, obj.metadata.namespace, obj.metadata.name);
  return kube.request('PATCH', `${p}?fieldManager=${FIELD_MANAGER}&force=true`, obj, 'application/apply-patch+yaml');
}

async function tryGet(kube: Kube, kind: string, namespace: string | undefined, name: string): Promise<any | undefined> {
  return kube.tryGet(KIND_GVR[kind], namespace, name);
}

/** Whether this is kubevm's embedded API server: its /version carries `kubevm: "embedded"`. */
export async function detectEmbedded(kube: Kube): Promise<{ embedded: boolean; version: string }> {
  const v = await kube.request('GET', '/version');
  return { embedded: v?.kubevm === 'embedded', version: String(v?.gitVersion ?? 'unknown') };
}

/** The ConfigMap that records an installation, if it is one of ours. */
async function record(kube: Kube, namespace: string): Promise<any | undefined> {
  const cm = await tryGet(kube, 'ConfigMap', namespace, INSTALL_CONFIGMAP);
  return cm?.metadata?.labels?.['app.kubernetes.io/managed-by'] === FIELD_MANAGER && !cm.metadata.deletionTimestamp
    ? cm
    : undefined;
}

function parseJson(text: unknown): any {
  try {
    return typeof text === 'string' ? JSON.parse(text) : undefined;
  } catch {
    return undefined;
  }
}

/** The objects of this installation besides the CRDs, as `Kind/…/name`, in apply order. */
async function listComponents(kube: Kube, namespace: string): Promise<any[]> {
  const selector = `app.kubernetes.io/managed-by=${FIELD_MANAGER},${INSTALL_LABEL}=${namespace}`;
  const out: any[] = [];
  for (const kind of COMPONENT_KINDS) {
    const g = KIND_GVR[kind];
    const items = await kube
      .list(g, g.namespaced ? namespace : undefined, selector)
      .catch((e) => (isNotFound(e) ? [] : Promise.reject(e)));
    for (const o of items) if (!o.metadata.deletionTimestamp) out.push({ ...o, kind });
  }
  return out;
}

/** kubevm objects that deleting the CRDs would delete with them, per kind. */
async function kubevmObjects(kube: Kube): Promise<{ kind: string; names: string[] }[]> {
  const crds = (await kube.request('GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions')).items as any[];
  const out: { kind: string; names: string[] }[] = [];
  for (const crd of crds.filter((c) => c.spec?.group === GROUP)) {
    const version = (crd.spec.versions ?? []).find((v: any) => v.served)?.name;
    if (!version) continue;
    const list = await kube.request('GET', `/apis/${GROUP}/${version}/${crd.spec.names.plural}`).catch(() => ({ items: [] }));
    const names = (list.items ?? []).map((o: any) => `${o.metadata.namespace}/${o.metadata.name}`);
    if (names.length) out.push({ kind: crd.spec.names.kind, names });
  }
  return out;
}

async function waitGone(
  ctx: OpContext,
  kind: string,
  namespace: string | undefined,
  name: string,
  deadline: number,
): Promise<void> {
  await waitFor(ctx, {
    gvr: KIND_GVR[kind],
    namespace: namespace ?? '',
    name,
    what: `${kind} ${namespace ? `${namespace}/` : ''}${name} to be deleted`,
    timeoutMs: Math.max(deadline - Date.now(), 1000),
    check: (o) => ({ done: !o }),
  });
}

function deploymentRollout(o: any): Verdict {
  if (!o) return { done: false, failed: 'deleted while waiting' };
  const st = o.status ?? {};
  if ((st.observedGeneration ?? -1) < (o.metadata.generation ?? 0)) return { done: false };
  const progressing = (st.conditions ?? []).find((c: any) => c.type === 'Progressing');
  if (progressing?.status === 'False') return { done: false, failed: `${progressing.reason}: ${progressing.message ?? ''}` };
  const want = o.spec?.replicas ?? 1;
  return { done: (st.updatedReplicas ?? 0) >= want && (st.availableReplicas ?? 0) >= want && (st.replicas ?? 0) <= want };
}

function daemonSetRollout(o: any): Verdict {
  if (!o) return { done: false, failed: 'deleted while waiting' };
  const st = o.status ?? {};
  if ((st.observedGeneration ?? -1) < (o.metadata.generation ?? 0)) return { done: false };
  const want = st.desiredNumberScheduled ?? 0;
  return { done: (st.updatedNumberScheduled ?? 0) >= want && (st.numberAvailable ?? 0) >= want };
}

const ROLLOUT_HINT =
  "No workload controller reported the rollout: a cluster without one (kubevm's embedded API server stores Deployments and DaemonSets but runs no pods) never does; set waitForRollout: false there.";

// ---- the resource ---------------------------------------------------------------------

export class Install {
  readonly token = INSTALL_TOKEN;
  readonly defaultTimeoutMs = 5 * 60_000;
  readonly inputKeys = INPUT_KEYS;
  readonly outputKeys = OUTPUT_KEYS;

  check(_urn: string, _olds: Props, news: Props): CheckOutcome {
    const inputs: Props = { ...news };
    inputs.namespace = news.namespace ?? INSTALL_DEFAULT_NAMESPACE;
    const p = withoutUnknowns(plain(inputs));
    const failures: Failure[] = [];
    const fail = (property: string, reason: string) => failures.push({ property, reason: `${property}: ${reason}` });
    for (const k of Object.keys(p))
      if (!INSTALL_INPUTS[k]) fail(k, `unknown property of ${INSTALL_TOKEN} (known: ${INPUT_KEYS.join(', ')})`);
    for (const [k, f] of Object.entries(INSTALL_INPUTS)) {
      const v = p[k];
      if (v === undefined) continue;
      if (f.type === 'array') {
        if (!Array.isArray(v)) fail(k, `value ${JSON.stringify(v)} must be a list of strings`);
        else
          v.forEach(
            (x: unknown, i: number) => typeof x !== 'string' && fail(`${k}[${i}]`, `value ${JSON.stringify(x)} must be a string`),
          );
      } else if (f.type === 'object') {
        if (!isObject(v)) fail(k, `value ${JSON.stringify(v)} must be a map of strings`);
        else
          for (const [mk, mv] of Object.entries(v))
            if (typeof mv !== 'string') fail(`${k}["${mk}"]`, `value ${JSON.stringify(mv)} must be a string`);
      } else if (typeof v !== f.type) fail(k, `value ${JSON.stringify(v)} must be a ${f.type}`);
      else if (f.enum && !f.enum.includes(v)) fail(k, `value ${JSON.stringify(v)} must be one of ${f.enum.join(', ')}`);
    }
    if (typeof p.namespace === 'string' && (!NAME_RE.test(p.namespace) || p.namespace.length > 63))
      fail(
        'namespace',
        `value ${JSON.stringify(p.namespace)} must be a DNS label (lower-case letters, digits and '-', at most 63 characters)`,
      );
    if (typeof p.image === 'string' && (p.image === '' || /\s/.test(p.image)))
      fail('image', `value ${JSON.stringify(p.image)} must be a container image reference without spaces`);
    const absolute = (property: string, v: unknown) => {
      if (typeof v !== 'string') return;
      if (!path.posix.isAbsolute(v) || v.split('/').includes('..'))
        fail(property, `value ${JSON.stringify(v)} must be an absolute path without '..'`);
    };
    absolute('dataDir', p.dataDir);
    if (Array.isArray(p.allowedRoots)) p.allowedRoots.forEach((r: unknown, i: number) => absolute(`allowedRoots[${i}]`, r));
    // Cluster mode runs containers: it needs their image. (mode auto is resolved at create time and checked there.)
    if (p.mode === 'cluster' && p.image === undefined && plain(inputs).image !== UNKNOWN)
      fail('image', 'required when mode is "cluster" (the image of the controller and agent containers)');
    return { inputs, failures };
  }

  /** Plain inputs with defaults, so spelling out a default is no change. */
  normalise(p: Props): Props {
    const out: Props = {};
    for (const [k, f] of Object.entries(INSTALL_INPUTS)) out[k] = p[k] ?? clone(f.default);
    if (isObject(out.nodeSelector) && Object.keys(out.nodeSelector).length === 0) out.nodeSelector = undefined;
    return out;
  }

  diff(olds: Props, news: Props, ignoreChanges: string[] = []): DiffOutcome {
    const o = this.normalise(plain(olds));
    const n = applyIgnoreChanges(o, this.normalise(plain(news)), ignoreChanges);
    const res = diffInputs(o, n, INPUT_KEYS, (k) => INSTALL_INPUTS[k].update ?? 'live');
    // A new namespace does not collide with the old one: create the new installation first (the CRDs stay, see delete).
    return { ...res, deleteBeforeReplace: false };
  }

  private inputsOf(raw: Props): Props {
    const p = plain(raw);
    const out: Props = {};
    for (const k of INPUT_KEYS) if (p[k] !== undefined) out[k] = p[k];
    return out;
  }

  result(raw: Props, obj: InstallOutcome): Props {
    return { ...this.inputsOf(raw), ...obj };
  }

  previewResult(raw: Props): Props {
    const p = plain(raw);
    const out: Props = { ...raw };
    out.effectiveMode = p.mode === 'embedded' || p.mode === 'cluster' ? p.mode : UNKNOWN;
    out.crds = crdNames();
    out.components = UNKNOWN;
    out.message = UNKNOWN;
    out.ownsNamespace = UNKNOWN;
    return out;
  }

  previewUpdate(olds: Props, news: Props, _change: DiffOutcome): Props {
    const out = this.previewResult(news);
    const o = plain(olds);
    if (o.ownsNamespace !== undefined) out.ownsNamespace = o.ownsNamespace;
    return out;
  }

  /** The id a create will return (previews show it too). */
  previewId(raw: Props): string {
    const ns = plain(raw).namespace;
    return typeof ns === 'string' ? `${ns}/${INSTALL_CONFIGMAP}` : `${INSTALL_DEFAULT_NAMESPACE}/${INSTALL_CONFIGMAP}`;
  }

  async create(ctx: OpContext, raw: Props, timeoutMs: number): Promise<{ id: string; obj: InstallOutcome }> {
    const s = settingsOf(plain(raw));
    const id = `${s.namespace}/${INSTALL_CONFIGMAP}`;
    if (await record(ctx.kube, s.namespace))
      throw new Error(`kubevm is already installed in namespace ${s.namespace} (ConfigMap ${id}); import it with id "${id}"`);
    return { id, obj: await this.applyAll(ctx, raw, s, id, timeoutMs) };
  }

  async update(
    ctx: OpContext,
    id: string,
    _olds: Props,
    news: Props,
    timeoutMs: number,
    _change: DiffOutcome,
  ): Promise<InstallOutcome> {
    const s = settingsOf(plain(news));
    if (`${s.namespace}/${INSTALL_CONFIGMAP}` !== id) throw new Error(`namespace: changing it replaces the Install (id ${id})`);
    return this.applyAll(ctx, news, s, id, timeoutMs);
  }

  private async resolveMode(ctx: OpContext, s: InstallSettings): Promise<{ mode: Mode; version: string }> {
    const { embedded, version } = await detectEmbedded(ctx.kube);
    if (s.mode === 'embedded' && !embedded)
      throw new Error(
        `mode: "embedded" needs kubevm's embedded cluster (kubevm cluster up), but this API server (${version}) is not one; use mode "cluster" or "auto"`,
      );
    const mode: Mode = s.mode === 'auto' ? (embedded ? 'embedded' : 'cluster') : s.mode;
    if (mode === 'cluster' && !s.image)
      throw new Error(
        `image: required in cluster mode${s.mode === 'auto' ? ` (mode auto chose cluster: this API server, ${version}, is not kubevm's embedded one)` : ''}`,
      );
    if (mode === 'cluster' && embedded)
      ctx.warn(
        `cluster mode on kubevm's embedded cluster: the Deployment and DaemonSet are stored, but nothing runs their pods (the controller and agents of \`kubevm cluster up\` run in its process)`,
      );
    return { mode, version };
  }

  /** Applies everything the settings want, prunes what they no longer want, waits for readiness. */
  private async applyAll(ctx: OpContext, raw: Props, s: InstallSettings, id: string, timeoutMs: number): Promise<InstallOutcome> {
    const deadline = Date.now() + timeoutMs;
    const kube = ctx.kube;
    const { mode } = await this.resolveMode(ctx, s);
    const ns = s.namespace;
    ctx.progress(`installing kubevm into namespace ${ns} (${mode} mode)`);

    // CRDs first: they are shared by every installation and the in-process runtime; established before anything uses them.
    const crds = allCrds().map((c) => ({
      ...c,
      metadata: { ...c.metadata, labels: { ...c.metadata.labels, 'app.kubernetes.io/managed-by': FIELD_MANAGER } },
    }));
    for (const crd of crds) await apply(kube, crd);

    // The namespace is ours only if we make it (the annotation says so, also to a later Read or Delete).
    const existingNs = await tryGet(kube, 'Namespace', undefined, ns);
    if (!existingNs || existingNs.metadata.annotations?.[CREATED_BY] === FIELD_MANAGER) {
      await apply(kube, {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: ns, labels: labels(ns, 'namespace'), annotations: { [CREATED_BY]: FIELD_MANAGER } },
      });
    }
    const wanted = mode === 'cluster' ? clusterManifests(s) : [];
    for (const o of wanted) await apply(kube, o);
    const message = await this.describe(ctx, s, mode, plain(raw).backend !== undefined);
    // The ConfigMap last: it is the record, so a failed first apply leaves none and a retry creates instead of refusing.
    await apply(kube, configMap(s, mode, this.inputsOf(raw), message));

    // Prune what an earlier apply made that these settings do not want (the workloads after a switch to embedded).
    const keep = new Set([...wanted.map(componentName), `ConfigMap/${ns}/${INSTALL_CONFIGMAP}`, `Namespace/${ns}`]);
    for (const o of (await listComponents(kube, ns)).reverse()) {
      if (keep.has(componentName(o))) continue;
      ctx.progress(`removing ${componentName(o)} (not wanted in ${mode} mode)`);
      await kube.delete(KIND_GVR[o.kind], o.metadata.namespace, o.metadata.name);
    }

    const outcome = await this.outcome(kube, ns, mode, message);
    try {
      for (const crd of crds) {
        await waitFor(ctx, {
          gvr: KIND_GVR.CustomResourceDefinition,
          namespace: '',
          name: crd.metadata.name,
          what: `CustomResourceDefinition ${crd.metadata.name} to be established`,
          timeoutMs: Math.max(deadline - Date.now(), 1000),
          intervalMs: 50,
          check: (o) => ({
            done: (o?.status?.conditions ?? []).some((c: any) => c.type === 'Established' && c.status === 'True'),
          }),
        });
      }
      if (mode === 'cluster' && s.waitForRollout) {
        for (const [kind, name, check] of [
          ['Deployment', CONTROLLER, deploymentRollout],
          ['DaemonSet', AGENT, daemonSetRollout],
        ] as const) {
          await waitFor(ctx, {
            gvr: KIND_GVR[kind],
            namespace: ns,
            name,
            what: `${kind} ${ns}/${name} to roll out`,
            timeoutMs: Math.max(deadline - Date.now(), 1000),
            intervalMs: 500,
            check,
            timeoutHint: ROLLOUT_HINT,
          });
        }
      }
    } catch (e) {
      if (e instanceof WaitError) throw new InitFailedError(e.message, id, this.result(raw, outcome), raw);
      throw e;
    }
    return outcome;
  }

  /** One or two sentences for the `message` output; warns when the embedded agents cannot follow the configuration. */
  private async describe(ctx: OpContext, s: InstallSettings, mode: Mode, backendSet: boolean): Promise<string> {
    const n = crdNames().length;
    const record = `the configuration (ConfigMap ${s.namespace}/${INSTALL_CONFIGMAP})`;
    if (mode === 'cluster') {
      return (
        `Applied ${n} CRDs, ${record}, RBAC, the controller Deployment ${s.namespace}/${CONTROLLER} and the agent DaemonSet ${s.namespace}/${AGENT} (image ${s.image}); ` +
        (s.waitForRollout ? 'both rolled out.' : 'their rollout was not awaited (waitForRollout: false).')
      );
    }
    const nodes = (await ctx.kube.list(
      { group: '', version: 'v1', plural: 'nodes', namespaced: false },
      undefined,
      'kubevm.dev/node=true',
    )) as any[];
    const names = nodes.map((x) => x.metadata.name as string).sort();
    const backends = new Set(
      nodes.flatMap((x) =>
        String(x.metadata.annotations?.['kubevm.dev/backends'] ?? '')
          .split(',')
          .filter(Boolean),
      ),
    );
    if (backendSet && names.length && !backends.has(s.backend))
      ctx.warn(
        `backend ${s.backend} is configured, but the embedded cluster's node agents run ${[...backends].join(', ')}: in-process agents take their backend from \`kubevm cluster up --backend\``,
      );
    const agents = names.length
      ? `the controller and ${names.length} node agent${names.length > 1 ? 's' : ''} (${names.join(', ')}) run in the cluster process`
      : 'the controller runs in the cluster process, but no node agent has registered yet (start the cluster with `kubevm cluster up --nodes N`)';
    return `kubevm's embedded cluster: applied ${n} CRDs and ${record} only; ${agents}, so no Deployment or DaemonSet is installed.`;
  }

  private async outcome(kube: Kube, ns: string, mode: Mode, message: string): Promise<InstallOutcome> {
    const present = await kube.request('GET', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions');
    const have = new Set((present.items as any[]).map((c) => c.metadata.name));
    const components = await listComponents(kube, ns);
    return {
      effectiveMode: mode,
      crds: crdNames().filter((c) => have.has(c)),
      components: components.map(componentName),
      message,
      ownsNamespace: components.some((o) => o.kind === 'Namespace' && o.metadata.annotations?.[CREATED_BY] === FIELD_MANAGER),
    };
  }

  async read(ctx: OpContext, id: string, _like: Props | undefined): Promise<{ inputs: Props; props: Props } | undefined> {
    const { namespace } = parseId(id);
    const cm = await record(ctx.kube, namespace);
    if (!cm) return undefined;
    const recorded = parseJson(cm.metadata.annotations?.[INPUTS_ANNOTATION]) ?? {};
    const state = parseJson(cm.metadata.annotations?.[STATE_ANNOTATION]) ?? {};
    const inputs: Props = {};
    for (const k of INPUT_KEYS) if (recorded[k] !== undefined) inputs[k] = recorded[k];
    inputs.namespace = namespace;
    // What the cluster holds wins over the record: an out-of-band edit of the configuration shows up as drift.
    const normal = this.normalise(inputs);
    const live = parseJson(cm.data?.['config.json']) ?? {};
    for (const k of ['backend', 'allowedRoots', 'dataDir'])
      if (live[k] !== undefined && !deepEqual(live[k], normal[k])) inputs[k] = live[k];
    const mode: Mode = state.effectiveMode === 'cluster' ? 'cluster' : 'embedded';
    if (mode === 'cluster') {
      const image = (await tryGet(ctx.kube, 'Deployment', namespace, CONTROLLER))?.spec?.template?.spec?.containers?.[0]?.image;
      if (image !== undefined && image !== normal.image) inputs.image = image;
    }
    const outcome = await this.outcome(ctx.kube, namespace, mode, String(state.message ?? ''));
    return { inputs, props: { ...inputs, ...outcome } };
  }

  /**
   * Removes the installation. The CRDs go too only in cluster mode with
   * removeCrds (default true), when no other Install uses them and no kubevm
   * object exists: deleting a CRD deletes all its objects, so with objects left
   * this refuses before changing anything. The embedded cluster keeps its CRDs
   * (its in-process controller and agents need them).
   */
  async delete(ctx: OpContext, id: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const kube = ctx.kube;
    const { namespace } = parseId(id);
    const cm = await record(kube, namespace);
    const inputs = parseJson(cm?.metadata.annotations?.[INPUTS_ANNOTATION]) ?? {};
    const state = parseJson(cm?.metadata.annotations?.[STATE_ANNOTATION]) ?? {};
    const s = settingsOf(inputs);

    let removeCrds = false;
    if (cm && state.effectiveMode === 'cluster' && s.removeCrds) {
      const others = (
        await kube.list(
          KIND_GVR.ConfigMap,
          undefined,
          `app.kubernetes.io/managed-by=${FIELD_MANAGER},app.kubernetes.io/component=config`,
        )
      )
        .filter(
          (o) => o.metadata.namespace !== namespace && o.metadata.name === INSTALL_CONFIGMAP && !o.metadata.deletionTimestamp,
        )
        .map((o) => o.metadata.namespace);
      if (others.length) ctx.progress(`keeping the kubevm CRDs: the Install in namespace ${others.join(', ')} uses them`);
      else {
        const left = await kubevmObjects(kube);
        if (left.length) {
          const what = left.map(
            (k) =>
              `${k.names.length} ${k.kind}${k.names.length > 1 ? 's' : ''} (${k.names.slice(0, 3).join(', ')}${k.names.length > 3 ? ', …' : ''})`,
          );
          throw new Error(
            `refusing to delete the kubevm CRDs of Install ${id}: deleting a CRD deletes every object of its kind, and these kubevm objects remain: ${what.join(', ')}. ` +
              'Delete those first, or set removeCrds: false on the Install to uninstall kubevm and keep the CRDs and these objects. Nothing was deleted.',
          );
        }
        removeCrds = true;
      }
    }

    const components = await listComponents(kube, namespace);
    for (const o of [...components].reverse()) {
      if (o.kind === 'Namespace') continue;
      await kube.delete(KIND_GVR[o.kind], o.metadata.namespace, o.metadata.name);
    }
    const ownNs = components.find((o) => o.kind === 'Namespace' && o.metadata.annotations?.[CREATED_BY] === FIELD_MANAGER);
    if (ownNs) {
      ctx.progress(`deleting namespace ${namespace} (created by this Install)`);
      await kube.delete(KIND_GVR.Namespace, undefined, namespace);
      await waitGone(ctx, 'Namespace', undefined, namespace, deadline);
    }
    if (removeCrds) {
      for (const name of crdNames()) await kube.delete(KIND_GVR.CustomResourceDefinition, undefined, name);
      for (const name of crdNames()) await waitGone(ctx, 'CustomResourceDefinition', undefined, name, deadline);
    }
  }
}
