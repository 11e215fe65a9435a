/**
 * The fields of `kubevm:index:Install`, written once: the provider validates,
 * defaults and classifies with this table, and scripts/gen-schema.ts turns it
 * into the resource's entry in schema.json (Install has no CRD, so the CRD
 * schema in controller/api cannot be its source). No imports on purpose: the
 * schema generator loads it without the provider's runtime dependencies.
 */
export type InstallUpdate = 'live' | 'replace';

export interface InstallField {
  type: 'string' | 'boolean' | 'array' | 'object';
  /** Arrays: the item type; objects: a map with values of this type. */
  of?: 'string';
  enum?: string[];
  default?: unknown;
  description: string;
  /** How a change is applied (inputs only). */
  update?: InstallUpdate;
}

export const INSTALL_TOKEN = 'kubevm:index:Install';
export const INSTALL_DEFAULT_NAMESPACE = 'kubevm-system';
/** The ConfigMap that holds the configuration and records the installation; the resource id is `<namespace>/kubevm-config`. */
export const INSTALL_CONFIGMAP = 'kubevm-config';

export const INSTALL_DESCRIPTION =
  'Deploys kubevm into a cluster: the kubevm.dev CRDs, a namespace and a ConfigMap with the configuration, and in cluster mode ' +
  'a ServiceAccount, ClusterRole, ClusterRoleBinding, the controller Deployment and the privileged node agent DaemonSet. On ' +
  "kubevm's embedded cluster, where the controller and the node agents already run in the cluster process, it applies the CRDs " +
  'and the configuration only, and says so in its outputs. Objects are written with server-side apply (field manager ' +
  '`kubevm-install`), so applying again changes nothing. The id is `<namespace>/kubevm-config`.';

export const INSTALL_INPUTS: Record<string, InstallField> = {
  namespace: {
    type: 'string',
    default: INSTALL_DEFAULT_NAMESPACE,
    description:
      'Namespace for the configuration and the controller and agent workloads; created when absent (and then deleted with the Install).',
    update: 'replace',
  },
  mode: {
    type: 'string',
    enum: ['auto', 'embedded', 'cluster'],
    default: 'auto',
    description:
      "auto: embedded on kubevm's embedded cluster (its /version carries `kubevm: embedded`), else cluster. embedded: CRDs and configuration only (fails on any other cluster). cluster: everything, including the controller Deployment and the agent DaemonSet.",
    update: 'live',
  },
  image: {
    type: 'string',
    description:
      'Container image of the controller and the node agent (runs `kubevm controller` and `kubevm agent`). Required in cluster mode.',
    update: 'live',
  },
  backend: {
    type: 'string',
    enum: ['qemu', 'sim'],
    default: 'qemu',
    description:
      'HAL backend of the node agents: qemu (KVM where /dev/kvm exists, else TCG) or sim (no VMs; status only, for scale tests).',
    update: 'live',
  },
  allowedRoots: {
    type: 'array',
    of: 'string',
    default: ['/var/lib/kubevm/shared'],
    description:
      'Absolute host directories that ContainerPath shares, kernels and image imports may come from; mounted into the agent.',
    update: 'live',
  },
  dataDir: {
    type: 'string',
    default: '/var/lib/kubevm',
    description:
      'Absolute host directory of each node for volumes, run state and QMP sockets; mounted into the agent at the same path.',
    update: 'live',
  },
  nodeSelector: {
    type: 'object',
    of: 'string',
    description: 'Node labels the agent DaemonSet is restricted to (cluster mode), e.g. the nodes that have /dev/kvm.',
    update: 'live',
  },
  waitForRollout: {
    type: 'boolean',
    default: true,
    description:
      "Cluster mode: wait until the controller Deployment and the agent DaemonSet report a finished rollout. Set false on a cluster that runs no workload controllers (kubevm's embedded API server stores Deployments and DaemonSets but never reports their status).",
    update: 'live',
  },
  removeCrds: {
    type: 'boolean',
    default: true,
    description:
      'Cluster mode: deleting the Install also deletes the kubevm.dev CRDs (unless another Install still uses them), but refuses, and deletes nothing, while kubevm objects such as VirtualMachines or Volumes exist: deleting a CRD deletes every object of its kind. false: deleting leaves the CRDs and every kubevm object in place. The embedded cluster always keeps its CRDs.',
    update: 'live',
  },
};

export const INSTALL_OUTPUTS: Record<string, InstallField> = {
  effectiveMode: { type: 'string', enum: ['embedded', 'cluster'], description: 'The mode applied (`mode: auto` resolved).' },
  crds: { type: 'array', of: 'string', description: 'Names of the CustomResourceDefinitions applied.' },
  components: {
    type: 'array',
    of: 'string',
    description: 'The other objects applied, as `Kind/name` or `Kind/namespace/name`.',
  },
  message: { type: 'string', description: 'What was installed and what runs where, in one sentence or two.' },
  ownsNamespace: { type: 'boolean', description: 'Whether the Install created its namespace (and so deletes it).' },
};
