/**
 * meta.k8s.io/v1 Table output for `kubectl get`.
 *
 * kubectl 1.32 has no compiled-in printers: it prints whatever columns and
 * cells the server sends. The column sets and cell logic below are ported from
 * kube-apiserver's pkg/printers/internalversion/printers.go, the CRD table
 * convertor (apiextensions-apiserver .../tableconvertor) and the default
 * convertor (apiserver registry/rest/table.go), so output matches a real cluster.
 *
 * The server side always renders the "wide" cells (upstream passes Wide: true);
 * kubectl hides columns with priority > 0 unless `-o wide`.
 */
import { labelSelectorToString } from './selectors';

export interface ColumnDefinition {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

/** A CRD `additionalPrinterColumns` entry. */
export interface PrinterColumn {
  name: string;
  type: string;
  format?: string;
  description?: string;
  priority?: number;
  jsonPath: string;
}

export interface BuildTableOptions {
  group: string;
  resource: string;
  objects: any[];
  /** Set for custom resources (possibly empty, meaning the default Age column). */
  printerColumns?: PrinterColumn[];
  resourceVersion: string;
  continueToken?: string;
  remainingItemCount?: number;
  includeObject?: 'None' | 'Metadata' | 'Object';
  now?: Date;
  evalJsonPath: (obj: any, path: string) => any;
}

// ---------------------------------------------------------------------------
// Durations and timestamps
// ---------------------------------------------------------------------------

/**
 * k8s.io/apimachinery/pkg/util/duration.HumanDuration: ~2-3 significant
 * figures, e.g. "45s", "2m3s", "45m", "3h20m", "30h", "3d4h", "120d", "3y40d".
 * Go truncates toward zero at every step, so Math.trunc is used throughout.
 */
export function humanDuration(ms: number): string {
  const seconds = Math.trunc(ms / 1000);
  // Up to 2s in the future (clock skew) still reads as "now".
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 60 * 2) return `${seconds}s`;
  const minutes = Math.trunc(ms / 60000);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 60 * 3) return `${minutes}m`;
  const hours = Math.trunc(ms / 3600000);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    const d = Math.trunc(hours / 24);
    return h === 0 ? `${d}d` : `${d}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.trunc(hours / 24)}d`;
  const years = Math.trunc(hours / 24 / 365);
  if (hours < 24 * 365 * 8) {
    const dy = Math.trunc(hours / 24) % 365;
    return dy === 0 ? `${years}y` : `${years}y${dy}d`;
  }
  return `${years}y`;
}

// Go's zero time.Time, which metav1.Time.IsZero() treats as unset.
const ZERO_MS = Date.parse('0001-01-01T00:00:00Z');

/** Epoch ms of a metav1.Time / MicroTime string, or undefined when unset or unparsable. */
function parseTime(v: unknown): number | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  const t = Date.parse(v);
  return Number.isNaN(t) || t === ZERO_MS ? undefined : t;
}

/** translateTimestampSince: "<unknown>" for an unset time. */
function since(v: unknown, now: number): string {
  const t = parseTime(v);
  return t === undefined ? '<unknown>' : humanDuration(now - t);
}

/** time.Time.UTC().Format(time.RFC3339): seconds precision, "Z". */
function rfc3339(v: unknown): string {
  const t = parseTime(v) ?? ZERO_MS;
  const d = new Date(t);
  const pad = (n: number, w = 2) => String(n).padStart(w, '0');
  return (
    `${pad(d.getUTCFullYear(), 4)}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}` +
    `T${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}Z`
  );
}

// ---------------------------------------------------------------------------
// Column definitions
// ---------------------------------------------------------------------------

// metav1.ObjectMeta{}.SwaggerDoc() texts, as upstream puts them into every table.
const NAME_DESC =
  'Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names';
const CREATED_DESC =
  'CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata';

function col(name: string, type: string, description: string, priority = 0, format = ''): ColumnDefinition {
  return { name, type, format, description, priority };
}
const nameCol = (priority = 0) => col('Name', 'string', NAME_DESC, priority, 'name');
const ageCol = () => col('Age', 'string', CREATED_DESC);
const CONTAINERS_DESC = 'Names of each container in the template.';
const IMAGES_DESC = 'Images referenced by each container in the template.';

// ---------------------------------------------------------------------------
// Built-in printers
// ---------------------------------------------------------------------------

interface RowCondition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
}
interface PrintedRow {
  cells: unknown[];
  conditions?: RowCondition[];
}
interface Printer {
  columns: ColumnDefinition[];
  print: (obj: any, now: number) => PrintedRow;
}

const count = (v: unknown) => (v && typeof v === 'object' ? Object.keys(v).length : 0);
const int = (v: unknown) => (typeof v === 'number' ? Math.trunc(v) : 0);
const str = (v: unknown) => (typeof v === 'string' ? v : '');
const goCompare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** labels.FormatLabels: sorted "k=v" pairs, or "<none>". */
function formatLabels(m: Record<string, string> | undefined): string {
  const pairs = Object.entries(m ?? {}).map(([k, v]) => `${k}=${v}`);
  return pairs.length ? pairs.sort(goCompare).join(',') : '<none>';
}

/** layoutContainerCells: comma-joined container names and images. */
function containerCells(containers: any[] | undefined): [string, string] {
  const cs = containers ?? [];
  return [cs.map((c) => str(c?.name)).join(','), cs.map((c) => str(c?.image)).join(',')];
}

/** metav1.LabelSelectorAsSelector(...).String(); a selector that fails validation prints as "". */
function selectorString(sel: any): string {
  try {
    return labelSelectorToString(sel);
  } catch {
    return '';
  }
}

const POD_SUCCEEDED: RowCondition[] = [
  { type: 'Completed', status: 'True', reason: 'Succeeded', message: 'The pod has completed successfully.' },
];
const POD_FAILED: RowCondition[] = [{ type: 'Completed', status: 'True', reason: 'Failed', message: 'The pod failed.' }];

/** printPod: READY, STATUS (the "reason" shown by kubectl), RESTARTS and the wide cells. */
function printPod(pod: any, now: number): PrintedRow {
  const spec = pod?.spec ?? {};
  const status = pod?.status ?? {};
  const conditions: any[] = status.conditions ?? [];
  let restarts = 0;
  let restartableInitRestarts = 0;
  let totalContainers = (spec.containers ?? []).length;
  let readyContainers = 0;
  let lastRestart: number | undefined;
  let lastRestartableInitRestart: number | undefined;
  const later = (a: number | undefined, b: number | undefined) => (b !== undefined && (a === undefined || b > a) ? b : a);

  const podPhase = str(status.phase);
  let reason = status.reason ? String(status.reason) : podPhase;
  for (const c of conditions) if (c?.type === 'PodScheduled' && c?.reason === 'SchedulingGated') reason = 'SchedulingGated';

  const row: PrintedRow = { cells: [] };
  if (podPhase === 'Succeeded') row.conditions = POD_SUCCEEDED;
  else if (podPhase === 'Failed') row.conditions = POD_FAILED;

  // Sidecars (init containers with restartPolicy Always) count as regular containers.
  const initSpecs = new Map<string, any>();
  for (const c of spec.initContainers ?? []) {
    initSpecs.set(c?.name, c);
    if (c?.restartPolicy === 'Always') totalContainers++;
  }
  const isSidecar = (name: string) => initSpecs.get(name)?.restartPolicy === 'Always';

  let initializing = false;
  const initStatuses: any[] = status.initContainerStatuses ?? [];
  for (let i = 0; i < initStatuses.length; i++) {
    const c = initStatuses[i] ?? {};
    restarts += int(c.restartCount);
    const finished = parseTime(c.lastState?.terminated?.finishedAt);
    lastRestart = later(lastRestart, finished);
    if (isSidecar(c.name)) {
      restartableInitRestarts += int(c.restartCount);
      lastRestartableInitRestart = later(lastRestartableInitRestart, finished);
    }
    const term = c.state?.terminated;
    const waiting = c.state?.waiting;
    if (term && int(term.exitCode) === 0) continue;
    if (isSidecar(c.name) && c.started === true) {
      if (c.ready) readyContainers++;
      continue;
    }
    if (term) {
      // Initialization failed.
      if (!term.reason)
        reason = int(term.signal) !== 0 ? `Init:Signal:${int(term.signal)}` : `Init:ExitCode:${int(term.exitCode)}`;
      else reason = 'Init:' + term.reason;
    } else if (waiting && waiting.reason && waiting.reason !== 'PodInitializing') {
      reason = 'Init:' + waiting.reason;
    } else {
      reason = `Init:${i}/${(spec.initContainers ?? []).length}`;
    }
    initializing = true;
    break;
  }

  const initializedTrue = conditions.some((c) => c?.type === 'Initialized' && c?.status === 'True');
  if (!initializing || initializedTrue) {
    restarts = restartableInitRestarts;
    lastRestart = lastRestartableInitRestart;
    let hasRunning = false;
    const statuses: any[] = status.containerStatuses ?? [];
    // Walk backwards so the first container's state wins, as upstream does.
    for (let i = statuses.length - 1; i >= 0; i--) {
      const c = statuses[i] ?? {};
      restarts += int(c.restartCount);
      lastRestart = later(lastRestart, parseTime(c.lastState?.terminated?.finishedAt));
      const term = c.state?.terminated;
      const waiting = c.state?.waiting;
      if (waiting && waiting.reason) reason = waiting.reason;
      else if (term && term.reason) reason = term.reason;
      else if (term) reason = int(term.signal) !== 0 ? `Signal:${int(term.signal)}` : `ExitCode:${int(term.exitCode)}`;
      else if (c.ready && c.state?.running) {
        hasRunning = true;
        readyContainers++;
      }
    }
    // A completed container next to a still-running one: report the pod as running.
    if (reason === 'Completed' && hasRunning) {
      reason = conditions.some((c) => c?.type === 'Ready' && c?.status === 'True') ? 'Running' : 'NotReady';
    }
  }

  const deleting = !!pod?.metadata?.deletionTimestamp;
  if (deleting && status.reason === 'NodeLost') reason = 'Unknown';
  else if (deleting && podPhase !== 'Succeeded' && podPhase !== 'Failed') reason = 'Terminating';

  let restartsCell = String(restarts);
  if (restarts !== 0 && lastRestart !== undefined) restartsCell = `${restarts} (${humanDuration(now - lastRestart)} ago)`;

  // Conversion fills podIPs from podIP, and upstream prints podIPs[0].
  const podIP = str(status.podIP) || str(status.podIPs?.[0]?.ip) || '<none>';
  let readinessGates = '<none>';
  const gates: any[] = spec.readinessGates ?? [];
  if (gates.length > 0) {
    let trueConditions = 0;
    for (const g of gates) {
      const c = conditions.find((x) => x?.type === g?.conditionType);
      if (c?.status === 'True') trueConditions++;
    }
    readinessGates = `${trueConditions}/${gates.length}`;
  }

  row.cells = [
    str(pod?.metadata?.name),
    `${readyContainers}/${totalContainers}`,
    reason,
    restartsCell,
    since(pod?.metadata?.creationTimestamp, now),
    podIP,
    str(spec.nodeName) || '<none>',
    str(status.nominatedNodeName) || '<none>',
    readinessGates,
  ];
  return row;
}

/** printNode: STATUS from the Ready condition, ROLES from node-role labels. */
function printNode(node: any, now: number): PrintedRow {
  const status = node?.status ?? {};
  const ready = (status.conditions ?? []).find((c: any) => c?.type === 'Ready');
  const states: string[] = [];
  if (ready) states.push(ready.status === 'True' ? 'Ready' : 'NotReady');
  else states.push('Unknown');
  if (node?.spec?.unschedulable) states.push('SchedulingDisabled');

  const roles = new Set<string>();
  for (const [k, v] of Object.entries<string>(node?.metadata?.labels ?? {})) {
    if (k.startsWith('node-role.kubernetes.io/')) {
      const role = k.slice('node-role.kubernetes.io/'.length);
      if (role) roles.add(role);
    } else if (k === 'kubernetes.io/role' && v !== '') {
      roles.add(v);
    }
  }
  const address = (type: string) => (status.addresses ?? []).find((a: any) => a?.type === type)?.address ?? '<none>';
  const info = status.nodeInfo ?? {};
  return {
    cells: [
      str(node?.metadata?.name),
      states.join(','),
      roles.size ? [...roles].sort(goCompare).join(',') : '<none>',
      since(node?.metadata?.creationTimestamp, now),
      str(info.kubeletVersion),
      address('InternalIP'),
      address('ExternalIP'),
      str(info.osImage) || '<unknown>',
      str(info.kernelVersion) || '<unknown>',
      str(info.containerRuntimeVersion) || '<unknown>',
    ],
  };
}

/** makePortString: "80/TCP,443:30001/TCP". */
function portString(ports: any[] | undefined): string {
  return (ports ?? [])
    .map((p) => {
      // Protocol defaults to TCP in the API.
      const proto = str(p?.protocol) || 'TCP';
      return int(p?.nodePort) > 0 ? `${int(p?.port)}:${int(p?.nodePort)}/${proto}` : `${int(p?.port)}/${proto}`;
    })
    .join(',');
}

/** getServiceExternalIP (wide form: load balancer addresses are not clipped). */
function serviceExternalIP(svc: any, type: string): string {
  const externalIPs: string[] = svc?.spec?.externalIPs ?? [];
  switch (type) {
    case 'ClusterIP':
    case 'NodePort':
      return externalIPs.length ? externalIPs.join(',') : '<none>';
    case 'LoadBalancer': {
      const lb = new Set<string>();
      for (const ing of svc?.status?.loadBalancer?.ingress ?? []) {
        if (ing?.ip) lb.add(ing.ip);
        else if (ing?.hostname) lb.add(ing.hostname);
      }
      const lbIps = [...lb].sort(goCompare);
      if (externalIPs.length) return [...lbIps, ...externalIPs].join(',');
      return lbIps.length ? lbIps.join(',') : '<pending>';
    }
    case 'ExternalName':
      return str(svc?.spec?.externalName);
  }
  return '<unknown>';
}

function printService(svc: any, now: number): PrintedRow {
  const spec = svc?.spec ?? {};
  // The API defaults type to ClusterIP; treat an undefaulted object the same.
  const type = str(spec.type) || 'ClusterIP';
  const clusterIP = str(spec.clusterIP) || str(spec.clusterIPs?.[0]) || '<none>';
  return {
    cells: [
      str(svc?.metadata?.name),
      type,
      clusterIP,
      serviceExternalIP(svc, type),
      portString(spec.ports) || '<none>',
      since(svc?.metadata?.creationTimestamp, now),
      formatLabels(spec.selector),
    ],
  };
}

/** printEvent, also used for events.k8s.io objects after mapping them to the core shape. */
function printEvent(ev: any, now: number): PrintedRow {
  const first = parseTime(ev?.firstTimestamp) !== undefined ? since(ev.firstTimestamp, now) : since(ev?.eventTime, now);
  let last = parseTime(ev?.lastTimestamp) !== undefined ? since(ev.lastTimestamp, now) : first;
  let n = int(ev?.count);
  if (ev?.series) {
    last = since(ev.series.lastObservedTime, now);
    n = int(ev.series.count);
  } else if (n === 0) {
    n = 1; // singleton events from the new API carry no count
  }
  const io = ev?.involvedObject ?? {};
  const kind = str(io.kind).toLowerCase();
  const target = io.name ? `${kind}/${io.name}` : kind;
  const component = str(ev?.source?.component) || str(ev?.reportingController);
  const instance = str(ev?.source?.host) || str(ev?.reportingInstance);
  return {
    cells: [
      last,
      str(ev?.type),
      str(ev?.reason),
      target,
      str(io.fieldPath),
      instance ? `${component}, ${instance}` : component,
      str(ev?.message).trim(),
      first,
      n,
      str(ev?.metadata?.name),
    ],
  };
}

/** events.k8s.io/v1 Event -> core/v1 field names (the shape printEvent reads). */
function eventsV1ToCore(ev: any): any {
  return {
    metadata: ev?.metadata,
    involvedObject: ev?.regarding,
    reason: ev?.reason,
    message: ev?.note,
    source: ev?.deprecatedSource,
    firstTimestamp: ev?.deprecatedFirstTimestamp,
    lastTimestamp: ev?.deprecatedLastTimestamp,
    count: ev?.deprecatedCount,
    type: ev?.type,
    eventTime: ev?.eventTime,
    series: ev?.series,
    reportingController: ev?.reportingController,
    reportingInstance: ev?.reportingInstance,
  };
}

function printRoleBinding(rb: any, now: number): PrintedRow {
  const users: string[] = [];
  const groups: string[] = [];
  const sas: string[] = [];
  for (const s of rb?.subjects ?? []) {
    if (s?.kind === 'ServiceAccount') sas.push(`${str(s.namespace)}/${str(s.name)}`);
    else if (s?.kind === 'User') users.push(str(s.name));
    else if (s?.kind === 'Group') groups.push(str(s.name));
  }
  return {
    cells: [
      str(rb?.metadata?.name),
      `${str(rb?.roleRef?.kind)}/${str(rb?.roleRef?.name)}`,
      since(rb?.metadata?.creationTimestamp, now),
      users.join(', '),
      groups.join(', '),
      sas.join(', '),
    ],
  };
}

const name = (o: any) => str(o?.metadata?.name);
const age = (o: any, now: number) => since(o?.metadata?.creationTimestamp, now);

const EVENT_PRINTER: Printer = {
  columns: [
    col('Last Seen', 'string', 'The time at which the most recent occurrence of this event was recorded.'),
    col('Type', 'string', 'Type of this event (Normal, Warning), new types could be added in the future'),
    col(
      'Reason',
      'string',
      "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col('Object', 'string', 'The object that this event is about.'),
    col(
      'Subobject',
      'string',
      'If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.',
      1,
    ),
    col('Source', 'string', 'The component reporting this event. Should be a short machine understandable string.', 1),
    col('Message', 'string', 'A human-readable description of the status of this operation.'),
    col('First Seen', 'string', 'The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)', 1),
    col('Count', 'string', 'The number of times this event has occurred.', 1),
    nameCol(1),
  ],
  print: printEvent,
};

const ROLE_BINDING_COLUMNS = (what: string): ColumnDefinition[] => [
  nameCol(),
  col('Role', 'string', 'RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.'),
  ageCol(),
  col('Users', 'string', `Users in the ${what}`, 1),
  col('Groups', 'string', `Groups in the ${what}`, 1),
  col('ServiceAccounts', 'string', `ServiceAccounts in the ${what}`, 1),
];

const BUILTIN: Record<string, Printer> = {
  '/pods': {
    columns: [
      nameCol(),
      col('Ready', 'string', 'The aggregate readiness state of this pod for accepting traffic.'),
      col('Status', 'string', 'The aggregate status of the containers in this pod.'),
      col(
        'Restarts',
        'string',
        'The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.',
      ),
      ageCol(),
      col(
        'IP',
        'string',
        'podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.',
        1,
      ),
      col('Node', 'string', 'NodeName indicates in which node this pod is scheduled.', 1),
      col('Nominated Node', 'string', 'nominatedNodeName is set only when this pod preempts other pods on the node.', 1),
      col('Readiness Gates', 'string', 'If specified, all readiness gates will be evaluated for pod readiness.', 1),
    ],
    print: printPod,
  },
  '/namespaces': {
    columns: [nameCol(), col('Status', 'string', 'The status of the namespace'), ageCol()],
    print: (o, now) => ({ cells: [name(o), str(o?.status?.phase), age(o, now)] }),
  },
  '/configmaps': {
    columns: [nameCol(), col('Data', 'string', 'Data contains the configuration data.'), ageCol()],
    print: (o, now) => ({ cells: [name(o), count(o?.data) + count(o?.binaryData), age(o, now)] }),
  },
  '/secrets': {
    columns: [
      nameCol(),
      col('Type', 'string', 'Used to facilitate programmatic handling of secret data.'),
      col('Data', 'string', 'Data contains the secret data.'),
      ageCol(),
    ],
    // Writes fold stringData into data; count the union in case an object still carries both.
    print: (o, now) => ({
      cells: [
        name(o),
        str(o?.type),
        new Set([...Object.keys(o?.data ?? {}), ...Object.keys(o?.stringData ?? {})]).size,
        age(o, now),
      ],
    }),
  },
  '/serviceaccounts': {
    columns: [
      nameCol(),
      col(
        'Secrets',
        'string',
        'Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.',
      ),
      ageCol(),
    ],
    print: (o, now) => ({ cells: [name(o), (o?.secrets ?? []).length, age(o, now)] }),
  },
  'coordination.k8s.io/leases': {
    columns: [
      nameCol(),
      col('Holder', 'string', 'holderIdentity contains the identity of the holder of a current lease.'),
      ageCol(),
    ],
    print: (o, now) => ({ cells: [name(o), str(o?.spec?.holderIdentity), age(o, now)] }),
  },
  '/nodes': {
    columns: [
      nameCol(),
      col('Status', 'string', 'The status of the node'),
      col('Roles', 'string', 'The roles of the node'),
      ageCol(),
      col('Version', 'string', 'Kubelet Version reported by the node.'),
      col('Internal-IP', 'string', 'List of addresses reachable to the node.', 1),
      col('External-IP', 'string', 'List of addresses reachable to the node.', 1),
      col('OS-Image', 'string', 'OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).', 1),
      col('Kernel-Version', 'string', "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
      col(
        'Container-Runtime',
        'string',
        'ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).',
        1,
      ),
    ],
    print: printNode,
  },
  'apps/deployments': {
    columns: [
      nameCol(),
      col('Ready', 'string', 'Number of the pod with ready state'),
      col(
        'Up-to-date',
        'string',
        'Total number of non-terminated pods targeted by this deployment that have the desired template spec.',
      ),
      col(
        'Available',
        'string',
        'Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.',
      ),
      ageCol(),
      col('Containers', 'string', CONTAINERS_DESC, 1),
      col('Images', 'string', IMAGES_DESC, 1),
      col('Selector', 'string', 'Label selector for pods.', 1),
    ],
    print: (o, now) => {
      // spec.replicas defaults to 1 in the API.
      const desired = typeof o?.spec?.replicas === 'number' ? int(o.spec.replicas) : 1;
      const [containers, images] = containerCells(o?.spec?.template?.spec?.containers);
      return {
        cells: [
          name(o),
          `${int(o?.status?.readyReplicas)}/${desired}`,
          int(o?.status?.updatedReplicas),
          int(o?.status?.availableReplicas),
          age(o, now),
          containers,
          images,
          selectorString(o?.spec?.selector),
        ],
      };
    },
  },
  'apps/daemonsets': {
    columns: [
      nameCol(),
      col('Desired', 'integer', 'The total number of nodes that should be running the daemon pod.'),
      col(
        'Current',
        'integer',
        'The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.',
      ),
      col(
        'Ready',
        'integer',
        'The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.',
      ),
      col('Up-to-date', 'integer', 'The total number of nodes that are running updated daemon pod'),
      col(
        'Available',
        'integer',
        'The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.',
      ),
      col(
        'Node Selector',
        'string',
        "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node.",
      ),
      ageCol(),
      col('Containers', 'string', CONTAINERS_DESC, 1),
      col('Images', 'string', IMAGES_DESC, 1),
      col('Selector', 'string', 'A label query over pods that are managed by the daemon set.', 1),
    ],
    print: (o, now) => {
      const s = o?.status ?? {};
      const [containers, images] = containerCells(o?.spec?.template?.spec?.containers);
      return {
        cells: [
          name(o),
          int(s.desiredNumberScheduled),
          int(s.currentNumberScheduled),
          int(s.numberReady),
          int(s.updatedNumberScheduled),
          int(s.numberAvailable),
          formatLabels(o?.spec?.template?.spec?.nodeSelector),
          age(o, now),
          containers,
          images,
          selectorString(o?.spec?.selector),
        ],
      };
    },
  },
  '/services': {
    columns: [
      nameCol(),
      col('Type', 'string', 'type determines how the Service is exposed.'),
      col('Cluster-IP', 'string', 'clusterIP is the IP address of the service and is usually assigned randomly.'),
      col(
        'External-IP',
        'string',
        'externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.',
      ),
      col('Port(s)', 'string', 'The list of ports that are exposed by this service.'),
      ageCol(),
      col('Selector', 'string', 'Route service traffic to pods with label keys and values matching this selector.', 1),
    ],
    print: printService,
  },
  '/events': EVENT_PRINTER,
  'events.k8s.io/events': { columns: EVENT_PRINTER.columns, print: (o, now) => printEvent(eventsV1ToCore(o), now) },
  'rbac.authorization.k8s.io/rolebindings': { columns: ROLE_BINDING_COLUMNS('roleBinding'), print: printRoleBinding },
  'rbac.authorization.k8s.io/clusterrolebindings': {
    columns: ROLE_BINDING_COLUMNS('clusterRoleBinding'),
    print: printRoleBinding,
  },
};

/**
 * The apiserver's default table convertor, used upstream for every kind without
 * a printer: roles, clusterroles, customresourcedefinitions, and here also any
 * built-in we do not know.
 */
const DEFAULT_PRINTER: Printer = {
  columns: [nameCol(), col('Created At', 'date', CREATED_DESC)],
  print: (o) => ({ cells: [name(o), rfc3339(o?.metadata?.creationTimestamp)] }),
};

// ---------------------------------------------------------------------------
// Custom resources (additionalPrinterColumns)
// ---------------------------------------------------------------------------

/** fmt.Print of a float64 (%v = %g, shortest digits): exponent form when exp < -4 or exp >= 6. */
function goFloat(v: number): string {
  if (!Number.isFinite(v)) return v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN';
  const [mant, expStr] = v.toExponential().split('e');
  const exp = Number(expStr);
  if (exp < -4 || exp >= 6) return `${mant}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return String(v);
}

/** encoding/json.Marshal: sorted object keys and HTML-safe escapes. */
function goJSON(v: unknown): string {
  const sortKeys = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(sortKeys);
    if (x && typeof x === 'object') {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(x).sort(goCompare)) out[k] = sortKeys((x as Record<string, unknown>)[k]);
      return out;
    }
    return x;
  };
  return JSON.stringify(sortKeys(v))
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/** jsonpath PrintResults for one value: maps and lists as JSON, scalars as text. */
function jsonPathText(v: unknown): string {
  if (v !== null && typeof v === 'object') return goJSON(v);
  if (typeof v === 'number') {
    // Unstructured JSON decodes integral numbers as int64 and the rest as float64.
    return Number.isInteger(v) && Math.abs(v) < 2 ** 63 ? v.toFixed(0) : goFloat(v);
  }
  return String(v);
}

/** cellForJSONValue; wrong types become null, which kubectl shows as <none>. */
function crCell(type: string, value: unknown, now: number): unknown {
  if (value === undefined || value === null) return null;
  switch (type) {
    case 'string':
      return jsonPathText(value);
    case 'integer':
      return typeof value === 'number' ? Math.trunc(value) : null;
    case 'number':
      return typeof value === 'number' ? value : null;
    case 'boolean':
      return typeof value === 'boolean' ? value : null;
    case 'date': {
      if (typeof value !== 'string') return null;
      if (value === '' || value === 'null') return '<unknown>';
      // metav1.Time parses strict RFC 3339.
      if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(value)) return '<invalid>';
      return since(value, now);
    }
  }
  return null;
}

function crPrinter(printerColumns: PrinterColumn[], evalJsonPath: (obj: any, path: string) => any): Printer {
  // A CRD version without printer columns gets a single Age column.
  const pcs: PrinterColumn[] = printerColumns.length
    ? printerColumns
    : [{ name: 'Age', type: 'date', description: CREATED_DESC, jsonPath: '.metadata.creationTimestamp' }];
  return {
    columns: [
      nameCol(),
      ...pcs.map((pc) =>
        col(
          pc.name,
          pc.type,
          pc.description || `Custom resource definition column (in JSONPath format): ${pc.jsonPath}`,
          pc.priority ?? 0,
          pc.format ?? '',
        ),
      ),
    ],
    print: (o, now) => ({
      cells: [
        name(o),
        ...pcs.map((pc) => {
          let v: unknown;
          try {
            v = evalJsonPath(o, pc.jsonPath);
          } catch {
            v = undefined; // an evaluation error is a missing value upstream
          }
          return crCell(pc.type, v, now);
        }),
      ],
    }),
  };
}

// ---------------------------------------------------------------------------
// Table assembly and content negotiation
// ---------------------------------------------------------------------------

function rowObject(obj: any, include: BuildTableOptions['includeObject']): any {
  if (include === 'None') return undefined;
  if (include === 'Object') return obj;
  // includeObject=Metadata is the default; kubectl reads namespace and labels from it.
  const metadata = { ...(obj?.metadata ?? {}) };
  delete metadata.managedFields;
  return { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata };
}

/**
 * Builds a meta.k8s.io/v1 Table for a list of objects (or one object, as a
 * watch event carries). Custom resources pass `printerColumns`; built-ins are
 * recognised by group and plural resource name.
 */
export function buildTable(opts: BuildTableOptions): any {
  const now = (opts.now ?? new Date()).getTime();
  const printer = opts.printerColumns
    ? crPrinter(opts.printerColumns, opts.evalJsonPath)
    : (BUILTIN[`${opts.group}/${opts.resource}`] ?? DEFAULT_PRINTER);

  const rows = opts.objects.map((obj) => {
    const printed = printer.print(obj, now);
    const row: any = { cells: printed.cells };
    if (printed.conditions) row.conditions = printed.conditions;
    const object = rowObject(obj, opts.includeObject);
    if (object !== undefined) row.object = object;
    return row;
  });

  // ListMeta omits empty fields.
  const metadata: any = {};
  if (opts.resourceVersion) metadata.resourceVersion = opts.resourceVersion;
  if (opts.continueToken) metadata.continue = opts.continueToken;
  if (opts.remainingItemCount !== undefined) metadata.remainingItemCount = opts.remainingItemCount;

  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata,
    columnDefinitions: printer.columns.map((c) => ({ ...c })),
    rows,
  };
}

interface MediaRange {
  type: string;
  subtype: string;
  params: Record<string, string>;
  q: number;
}

function parseAccept(accept: string): MediaRange[] {
  const out: MediaRange[] = [];
  for (const clause of accept.split(',')) {
    const [range, ...rawParams] = clause.split(';').map((s) => s.trim());
    if (!range) continue;
    const [type, subtype = ''] = range.toLowerCase().split('/');
    const params: Record<string, string> = {};
    let q = 1;
    for (const p of rawParams) {
      const eq = p.indexOf('=');
      if (eq < 0) continue;
      const k = p.slice(0, eq).trim().toLowerCase();
      const v = p
        .slice(eq + 1)
        .trim()
        .replace(/^"(.*)"$/, '$1');
      if (k === 'q') q = Number(v);
      else params[k] = v;
    }
    if (!(q > 0)) continue;
    out.push({ type, subtype, params, q });
  }
  // Highest q first; Array.prototype.sort is stable, so equal q keeps client order.
  return out.sort((a, b) => b.q - a.q);
}

const isJsonish = (m: MediaRange) =>
  (m.type === 'application' && (m.subtype === 'json' || m.subtype === '*')) || (m.type === '*' && m.subtype === '*');

/**
 * True if the first media range we can serve asks for a Table
 * (`application/json;as=Table;v=v1;g=meta.k8s.io`, or v1beta1), as kubectl get does.
 */
export function wantsTable(accept: string | undefined): boolean {
  if (!accept) return false;
  for (const m of parseAccept(accept)) {
    const as = m.params['as'];
    if (as === undefined) {
      // A plain type we can answer with the object itself.
      if (isJsonish(m) || (m.type === 'application' && m.subtype === 'yaml')) return false;
      continue;
    }
    if (
      as === 'Table' &&
      m.params['g'] === 'meta.k8s.io' &&
      (m.params['v'] === 'v1' || m.params['v'] === 'v1beta1') &&
      isJsonish(m)
    )
      return true;
    // Partial metadata is a different transformation; anything else we cannot serve, so keep looking.
    if ((as === 'PartialObjectMetadata' || as === 'PartialObjectMetadataList') && isJsonish(m)) return false;
  }
  return false;
}
