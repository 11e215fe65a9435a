import { buildTable, humanDuration, wantsTable, PrinterColumn } from '../../../cluster/apiserver/tables';

const NOW = new Date('2025-06-01T12:00:00Z');
const S = 1000;
const M = 60 * S;
const H = 60 * M;
const D = 24 * H;
const Y = 365 * D;

/** An RFC 3339 timestamp `ms` before NOW. */
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** Stand-in for the injected JSONPath evaluator: dotted paths only. */
const evalJsonPath = (obj: any, path: string) =>
  path
    .replace(/^\./, '')
    .split('.')
    .reduce((cur: any, k) => (cur == null ? undefined : cur[k]), obj);

function table(group: string, resource: string, objects: any[], extra: Partial<Parameters<typeof buildTable>[0]> = {}) {
  return buildTable({ group, resource, objects, resourceVersion: '42', now: NOW, evalJsonPath, ...extra });
}

/** The single row's cells keyed by column name. */
function cellsByName(group: string, resource: string, obj: any, extra: Partial<Parameters<typeof buildTable>[0]> = {}) {
  const t = table(group, resource, [obj], extra);
  const out: Record<string, unknown> = {};
  t.columnDefinitions.forEach((c: any, i: number) => (out[c.name] = t.rows[0].cells[i]));
  return out;
}

const columns = (t: any) => t.columnDefinitions.map((c: any) => (c.priority ? `${c.name}*` : c.name));

describe('humanDuration (duration.HumanDuration)', () => {
  it.each([
    [-2 * S, '<invalid>'],
    [-1999, '0s'],
    [-1 * S, '0s'],
    [0, '0s'],
    [999, '0s'],
    [45 * S, '45s'],
    [119 * S + 999, '119s'],
    [120 * S, '2m'],
    [123 * S, '2m3s'],
    [9 * M + 59 * S, '9m59s'],
    [10 * M, '10m'],
    [10 * M + 59 * S, '10m'],
    [45 * M, '45m'],
    [3 * H - 1, '179m'],
    [3 * H, '3h'],
    [3 * H + 20 * M + 59 * S, '3h20m'],
    [8 * H - 1, '7h59m'],
    [8 * H, '8h'],
    [30 * H, '30h'],
    [48 * H - 1, '47h'],
    [48 * H, '2d'],
    [3 * D + 4 * H, '3d4h'],
    [8 * D - 1, '7d23h'],
    [8 * D, '8d'],
    [120 * D, '120d'],
    [2 * Y - 1, '729d'],
    [2 * Y, '2y'],
    [3 * Y + 40 * D, '3y40d'],
    [8 * Y - 1, '7y364d'],
    [8 * Y, '8y'],
    [10 * Y + 100 * D, '10y'],
  ])('%d ms -> %s', (ms, expected) => {
    expect(humanDuration(ms)).toBe(expected);
  });
});

describe('wantsTable', () => {
  const KUBECTL =
    'application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json';

  it.each([
    [KUBECTL, true],
    ['application/json;as=Table;v=v1beta1;g=meta.k8s.io', true],
    ['application/json; as=Table; v=v1; g=meta.k8s.io', true],
    ['application/vnd.kubernetes.protobuf, application/json;as=Table;v=v1;g=meta.k8s.io', true],
    ['application/json;as=Table;v=v2;g=meta.k8s.io, application/json', false],
    ['application/json;as=Table;v=v1;g=example.com', false],
    ['application/json, application/json;as=Table;v=v1;g=meta.k8s.io', false],
    ['application/json;q=0.5, application/json;as=Table;v=v1;g=meta.k8s.io', true],
    ['application/json;as=Table;v=v1;g=meta.k8s.io;q=0, application/json', false],
    ['application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io', false],
    ['application/json', false],
    ['*/*', false],
    ['', false],
    [undefined, false],
  ])('%j -> %s', (accept, expected) => {
    expect(wantsTable(accept)).toBe(expected);
  });
});

describe('Table envelope and row objects', () => {
  const cm = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: 'cfg',
      namespace: 'ns1',
      labels: { a: 'b' },
      creationTimestamp: ago(5 * M),
      managedFields: [{ manager: 'kubectl' }],
    },
    data: { x: '1', y: '2' },
    binaryData: { z: 'AA==' },
  };

  it('builds a meta.k8s.io/v1 Table with PartialObjectMetadata rows by default', () => {
    const t = table('', 'configmaps', [cm]);
    expect(t.kind).toBe('Table');
    expect(t.apiVersion).toBe('meta.k8s.io/v1');
    expect(t.metadata).toEqual({ resourceVersion: '42' });
    expect(t.columnDefinitions[0]).toEqual(
      expect.objectContaining({ name: 'Name', type: 'string', format: 'name', priority: 0 }),
    );
    for (const c of t.columnDefinitions)
      expect(Object.keys(c).sort()).toEqual(['description', 'format', 'name', 'priority', 'type']);
    expect(t.rows).toEqual([
      {
        cells: ['cfg', 3, '5m'],
        object: {
          kind: 'PartialObjectMetadata',
          apiVersion: 'meta.k8s.io/v1',
          metadata: { name: 'cfg', namespace: 'ns1', labels: { a: 'b' }, creationTimestamp: cm.metadata.creationTimestamp },
        },
      },
    ]);
    // The source object is left alone.
    expect(cm.metadata.managedFields).toHaveLength(1);
  });

  it('includes the whole object for includeObject=Object and none for None', () => {
    expect(table('', 'configmaps', [cm], { includeObject: 'Object' }).rows[0].object).toBe(cm);
    expect(table('', 'configmaps', [cm], { includeObject: 'None' }).rows[0]).toEqual({ cells: ['cfg', 3, '5m'] });
  });

  it('carries continue and remainingItemCount, and renders an empty list', () => {
    const t = table('', 'configmaps', [], { continueToken: 'abc', remainingItemCount: 7 });
    expect(t.metadata).toEqual({ resourceVersion: '42', continue: 'abc', remainingItemCount: 7 });
    expect(t.rows).toEqual([]);
  });

  it('prints <unknown> age without a creationTimestamp', () => {
    expect(table('', 'configmaps', [{ metadata: { name: 'x' } }]).rows[0].cells).toEqual(['x', 0, '<unknown>']);
  });
});

describe('Pod table', () => {
  const base = (status: any, extra: any = {}) => ({
    metadata: { name: 'web', namespace: 'default', creationTimestamp: ago(2 * D + 3 * H), ...extra.metadata },
    spec: { containers: [{ name: 'app' }], nodeName: 'node-1', ...extra.spec },
    status,
  });

  it('has upstream columns', () => {
    expect(columns(table('', 'pods', []))).toEqual([
      'Name',
      'Ready',
      'Status',
      'Restarts',
      'Age',
      'IP*',
      'Node*',
      'Nominated Node*',
      'Readiness Gates*',
    ]);
  });

  it('renders a running pod', () => {
    const pod = base({
      phase: 'Running',
      podIP: '10.244.0.7',
      conditions: [{ type: 'Ready', status: 'True' }],
      containerStatuses: [{ name: 'app', ready: true, restartCount: 0, state: { running: { startedAt: ago(H) } } }],
    });
    expect(table('', 'pods', [pod]).rows[0].cells).toEqual([
      'web',
      '1/1',
      'Running',
      '0',
      '2d3h',
      '10.244.0.7',
      'node-1',
      '<none>',
      '<none>',
    ]);
  });

  it('shows the waiting reason of a container', () => {
    const pod = base({
      phase: 'Pending',
      containerStatuses: [{ name: 'app', ready: false, restartCount: 0, state: { waiting: { reason: 'ContainerCreating' } } }],
    });
    expect(cellsByName('', 'pods', pod)).toEqual(
      expect.objectContaining({ Ready: '0/1', Status: 'ContainerCreating', Restarts: '0', IP: '<none>' }),
    );
  });

  it("shows the first container's state when several are not running", () => {
    const pod = base(
      {
        phase: 'Running',
        containerStatuses: [
          { name: 'a', state: { waiting: { reason: 'ImagePullBackOff' } } },
          { name: 'b', state: { waiting: { reason: 'CrashLoopBackOff' } } },
        ],
      },
      { spec: { containers: [{ name: 'a' }, { name: 'b' }] } },
    );
    expect(cellsByName('', 'pods', pod).Status).toBe('ImagePullBackOff');
  });

  it('renders restarts with the time since the last one', () => {
    const pod = base({
      phase: 'Running',
      containerStatuses: [
        {
          name: 'app',
          ready: false,
          restartCount: 5,
          state: { waiting: { reason: 'CrashLoopBackOff' } },
          lastState: { terminated: { exitCode: 1, finishedAt: ago(2 * M + 5 * S) } },
        },
      ],
    });
    expect(cellsByName('', 'pods', pod)).toEqual(
      expect.objectContaining({ Ready: '0/1', Status: 'CrashLoopBackOff', Restarts: '5 (2m5s ago)' }),
    );
  });

  it('prints plain restart counts when no termination time is known', () => {
    const pod = base({
      phase: 'Running',
      containerStatuses: [{ name: 'app', restartCount: 2, ready: true, state: { running: {} } }],
    });
    expect(cellsByName('', 'pods', pod).Restarts).toBe('2');
  });

  it('prints ExitCode/Signal for terminated containers without a reason', () => {
    expect(
      cellsByName(
        '',
        'pods',
        base({ phase: 'Running', containerStatuses: [{ name: 'app', state: { terminated: { exitCode: 3 } } }] }),
      ).Status,
    ).toBe('ExitCode:3');
    expect(
      cellsByName(
        '',
        'pods',
        base({ phase: 'Running', containerStatuses: [{ name: 'app', state: { terminated: { exitCode: 137, signal: 9 } } }] }),
      ).Status,
    ).toBe('Signal:9');
  });

  it('shows Terminating while a deletionTimestamp is set, unless the pod finished', () => {
    const running = base(
      { phase: 'Running', containerStatuses: [{ name: 'app', ready: true, state: { running: {} } }] },
      { metadata: { deletionTimestamp: ago(S) } },
    );
    expect(cellsByName('', 'pods', running).Status).toBe('Terminating');
    const done = base(
      { phase: 'Succeeded', containerStatuses: [{ name: 'app', state: { terminated: { exitCode: 0, reason: 'Completed' } } }] },
      { metadata: { deletionTimestamp: ago(S) } },
    );
    expect(cellsByName('', 'pods', done).Status).toBe('Completed');
    const lost = base({ phase: 'Running', reason: 'NodeLost' }, { metadata: { deletionTimestamp: ago(S) } });
    expect(cellsByName('', 'pods', lost).Status).toBe('Unknown');
  });

  it('marks finished pods with a Completed row condition', () => {
    const t = table('', 'pods', [
      base({
        phase: 'Succeeded',
        containerStatuses: [{ name: 'app', state: { terminated: { exitCode: 0, reason: 'Completed' } } }],
      }),
      base({ phase: 'Failed', containerStatuses: [{ name: 'app', state: { terminated: { exitCode: 1, reason: 'Error' } } }] }),
      base({ phase: 'Running' }),
    ]);
    expect(t.rows[0].cells[2]).toBe('Completed');
    expect(t.rows[0].conditions).toEqual([
      { type: 'Completed', status: 'True', reason: 'Succeeded', message: 'The pod has completed successfully.' },
    ]);
    expect(t.rows[1].cells[2]).toBe('Error');
    expect(t.rows[1].conditions).toEqual([{ type: 'Completed', status: 'True', reason: 'Failed', message: 'The pod failed.' }]);
    expect(t.rows[2].conditions).toBeUndefined();
  });

  it('shows init progress', () => {
    const spec = { initContainers: [{ name: 'i1' }, { name: 'i2' }] };
    const first = base(
      {
        phase: 'Pending',
        initContainerStatuses: [
          { name: 'i1', state: { running: {} } },
          { name: 'i2', state: { waiting: { reason: 'PodInitializing' } } },
        ],
      },
      { spec },
    );
    expect(cellsByName('', 'pods', first).Status).toBe('Init:0/2');
    const second = base(
      {
        phase: 'Pending',
        initContainerStatuses: [
          { name: 'i1', state: { terminated: { exitCode: 0 } } },
          { name: 'i2', state: { running: {} } },
        ],
      },
      { spec },
    );
    expect(cellsByName('', 'pods', second).Status).toBe('Init:1/2');
    const crash = base(
      {
        phase: 'Pending',
        initContainerStatuses: [{ name: 'i1', restartCount: 3, state: { waiting: { reason: 'CrashLoopBackOff' } } }],
      },
      { spec },
    );
    expect(cellsByName('', 'pods', crash)).toEqual(expect.objectContaining({ Status: 'Init:CrashLoopBackOff', Restarts: '3' }));
    const failed = base(
      { phase: 'Pending', initContainerStatuses: [{ name: 'i1', state: { terminated: { exitCode: 2 } } }] },
      { spec },
    );
    expect(cellsByName('', 'pods', failed).Status).toBe('Init:ExitCode:2');
  });

  it('counts sidecar init containers as containers', () => {
    const pod = base(
      {
        phase: 'Running',
        conditions: [{ type: 'Initialized', status: 'True' }],
        initContainerStatuses: [{ name: 'proxy', started: true, ready: true, restartCount: 1, state: { running: {} } }],
        containerStatuses: [{ name: 'app', ready: true, state: { running: {} } }],
      },
      { spec: { initContainers: [{ name: 'proxy', restartPolicy: 'Always' }] } },
    );
    expect(cellsByName('', 'pods', pod)).toEqual(expect.objectContaining({ Ready: '2/2', Status: 'Running', Restarts: '1' }));
  });

  it('reports SchedulingGated and readiness gates', () => {
    const pod = base(
      {
        phase: 'Pending',
        conditions: [
          { type: 'PodScheduled', status: 'False', reason: 'SchedulingGated' },
          { type: 'example.com/ok', status: 'True' },
        ],
      },
      {
        spec: {
          nodeName: undefined,
          readinessGates: [{ conditionType: 'example.com/ok' }, { conditionType: 'example.com/other' }],
        },
      },
    );
    expect(cellsByName('', 'pods', pod)).toEqual(
      expect.objectContaining({ Status: 'SchedulingGated', Node: '<none>', 'Readiness Gates': '1/2' }),
    );
  });
});

describe('Deployment and DaemonSet tables', () => {
  const dep = {
    metadata: { name: 'web', creationTimestamp: ago(90 * S) },
    spec: {
      replicas: 3,
      selector: { matchLabels: { app: 'web' }, matchExpressions: [{ key: 'tier', operator: 'In', values: ['b', 'a'] }] },
      template: {
        spec: {
          containers: [
            { name: 'app', image: 'nginx:1.27' },
            { name: 'log', image: 'busybox' },
          ],
        },
      },
    },
    status: { readyReplicas: 2, updatedReplicas: 3, availableReplicas: 2 },
  };

  it('renders READY as ready/desired and the wide cells', () => {
    const t = table('apps', 'deployments', [dep]);
    expect(columns(t)).toEqual(['Name', 'Ready', 'Up-to-date', 'Available', 'Age', 'Containers*', 'Images*', 'Selector*']);
    expect(t.rows[0].cells).toEqual(['web', '2/3', 3, 2, '90s', 'app,log', 'nginx:1.27,busybox', 'app=web,tier in (a,b)']);
  });

  it('uses the defaulted replica count and zero for missing status', () => {
    const t = table('apps', 'deployments', [{ metadata: { name: 'x' }, spec: { selector: { matchLabels: { a: 'b' } } } }]);
    expect(t.rows[0].cells.slice(0, 4)).toEqual(['x', '0/1', 0, 0]);
    expect(table('apps', 'deployments', [{ metadata: { name: 'y' }, spec: { replicas: 0 } }]).rows[0].cells[1]).toBe('0/0');
  });

  it('renders a DaemonSet', () => {
    const ds = {
      metadata: { name: 'agent', creationTimestamp: ago(4 * H) },
      spec: {
        selector: { matchLabels: { app: 'agent' } },
        template: {
          spec: { nodeSelector: { 'kubernetes.io/os': 'linux', disk: 'ssd' }, containers: [{ name: 'a', image: 'agent:v1' }] },
        },
      },
      status: {
        desiredNumberScheduled: 3,
        currentNumberScheduled: 3,
        numberReady: 2,
        updatedNumberScheduled: 3,
        numberAvailable: 2,
      },
    };
    const t = table('apps', 'daemonsets', [ds]);
    expect(columns(t)).toEqual([
      'Name',
      'Desired',
      'Current',
      'Ready',
      'Up-to-date',
      'Available',
      'Node Selector',
      'Age',
      'Containers*',
      'Images*',
      'Selector*',
    ]);
    expect(t.rows[0].cells).toEqual([
      'agent',
      3,
      3,
      2,
      3,
      2,
      'disk=ssd,kubernetes.io/os=linux',
      '4h',
      'a',
      'agent:v1',
      'app=agent',
    ]);
    expect(table('apps', 'daemonsets', [{ metadata: { name: 'b' } }]).rows[0].cells[6]).toBe('<none>');
  });
});

describe('Node table', () => {
  const node = (extra: any = {}) => ({
    metadata: { name: 'n1', creationTimestamp: ago(20 * D), labels: extra.labels ?? {} },
    spec: extra.spec ?? {},
    status: {
      conditions: extra.conditions ?? [
        { type: 'MemoryPressure', status: 'False' },
        { type: 'Ready', status: 'True' },
      ],
      nodeInfo: {
        kubeletVersion: 'v1.32.0',
        osImage: 'Ubuntu 24.04',
        kernelVersion: '6.8.0',
        containerRuntimeVersion: 'containerd://1.7',
      },
      addresses: [
        { type: 'Hostname', address: 'n1' },
        { type: 'InternalIP', address: '192.168.1.10' },
      ],
    },
  });

  it('renders status, roles, version and wide cells', () => {
    const t = table('', 'nodes', [
      node({
        labels: {
          'node-role.kubernetes.io/control-plane': '',
          'node-role.kubernetes.io/etcd': 'true',
          'kubernetes.io/role': 'master',
        },
      }),
    ]);
    expect(columns(t)).toEqual([
      'Name',
      'Status',
      'Roles',
      'Age',
      'Version',
      'Internal-IP*',
      'External-IP*',
      'OS-Image*',
      'Kernel-Version*',
      'Container-Runtime*',
    ]);
    expect(t.rows[0].cells).toEqual([
      'n1',
      'Ready',
      'control-plane,etcd,master',
      '20d',
      'v1.32.0',
      '192.168.1.10',
      '<none>',
      'Ubuntu 24.04',
      '6.8.0',
      'containerd://1.7',
    ]);
  });

  it.each([
    [{}, 'Ready', '<none>'],
    [{ conditions: [{ type: 'Ready', status: 'False' }] }, 'NotReady', '<none>'],
    [{ conditions: [{ type: 'Ready', status: 'Unknown' }] }, 'NotReady', '<none>'],
    [{ conditions: [] }, 'Unknown', '<none>'],
    [{ spec: { unschedulable: true } }, 'Ready,SchedulingDisabled', '<none>'],
    [{ labels: { 'node-role.kubernetes.io/': '', 'kubernetes.io/role': '' } }, 'Ready', '<none>'],
    [{ labels: { 'node-role.kubernetes.io/worker': '' } }, 'Ready', 'worker'],
  ])('%j -> %s / %s', (extra, status, roles) => {
    const c = cellsByName('', 'nodes', node(extra));
    expect([c.Status, c.Roles]).toEqual([status, roles]);
  });

  it('prints <unknown> for missing node info', () => {
    const c = cellsByName('', 'nodes', { metadata: { name: 'bare' } });
    expect(c).toEqual(
      expect.objectContaining({
        Status: 'Unknown',
        Version: '',
        'Internal-IP': '<none>',
        'OS-Image': '<unknown>',
        'Container-Runtime': '<unknown>',
      }),
    );
  });
});

describe('Service table', () => {
  const svc = (spec: any, status: any = {}) => ({ metadata: { name: 's', creationTimestamp: ago(10 * M) }, spec, status });

  it('renders ports with node ports and the wide selector', () => {
    const t = table('', 'services', [
      svc({
        type: 'NodePort',
        clusterIP: '10.96.0.10',
        clusterIPs: ['10.96.0.10'],
        selector: { app: 'web', tier: 'fe' },
        ports: [
          { port: 80, protocol: 'TCP' },
          { port: 443, nodePort: 30001, protocol: 'TCP' },
          { port: 53, protocol: 'UDP' },
        ],
      }),
    ]);
    expect(columns(t)).toEqual(['Name', 'Type', 'Cluster-IP', 'External-IP', 'Port(s)', 'Age', 'Selector*']);
    expect(t.rows[0].cells).toEqual([
      's',
      'NodePort',
      '10.96.0.10',
      '<none>',
      '80/TCP,443:30001/TCP,53/UDP',
      '10m',
      'app=web,tier=fe',
    ]);
  });

  it.each([
    [{ clusterIP: 'None', ports: [{ port: 80 }] }, {}, ['ClusterIP', 'None', '<none>', '80/TCP', '<none>']],
    [
      { type: 'ClusterIP', clusterIP: '10.0.0.1', externalIPs: ['1.2.3.4', '5.6.7.8'] },
      {},
      ['ClusterIP', '10.0.0.1', '1.2.3.4,5.6.7.8', '<none>', '<none>'],
    ],
    [
      { type: 'LoadBalancer', clusterIP: '10.0.0.2', ports: [{ port: 80, nodePort: 31000 }] },
      {},
      ['LoadBalancer', '10.0.0.2', '<pending>', '80:31000/TCP', '<none>'],
    ],
    [
      { type: 'LoadBalancer', clusterIP: '10.0.0.2', externalIPs: ['9.9.9.9'] },
      { loadBalancer: { ingress: [{ ip: '5.5.5.5' }, { hostname: 'lb.example.com' }] } },
      ['LoadBalancer', '10.0.0.2', '5.5.5.5,lb.example.com,9.9.9.9', '<none>', '<none>'],
    ],
    [
      { type: 'ExternalName', externalName: 'db.example.com' },
      {},
      ['ExternalName', '<none>', 'db.example.com', '<none>', '<none>'],
    ],
  ])('%j', (spec, status, expected) => {
    const c = cellsByName('', 'services', svc(spec, status));
    expect([c.Type, c['Cluster-IP'], c['External-IP'], c['Port(s)'], c.Selector]).toEqual(expected);
  });
});

describe('Event tables', () => {
  const coreEvent = {
    metadata: { name: 'web.17a', namespace: 'default', creationTimestamp: ago(10 * M) },
    involvedObject: { kind: 'Pod', name: 'web', namespace: 'default', fieldPath: 'spec.containers{app}' },
    reason: 'Pulled',
    message: '  Successfully pulled image\n',
    type: 'Normal',
    source: { component: 'kubelet', host: 'node-1' },
    firstTimestamp: ago(10 * M),
    lastTimestamp: ago(30 * S),
    count: 4,
  };

  it('renders a core/v1 event', () => {
    const t = table('', 'events', [coreEvent]);
    expect(columns(t)).toEqual([
      'Last Seen',
      'Type',
      'Reason',
      'Object',
      'Subobject*',
      'Source*',
      'Message',
      'First Seen*',
      'Count*',
      'Name*',
    ]);
    expect(t.columnDefinitions[9].format).toBe('name');
    expect(t.rows[0].cells).toEqual([
      '30s',
      'Normal',
      'Pulled',
      'pod/web',
      'spec.containers{app}',
      'kubelet, node-1',
      'Successfully pulled image',
      '10m',
      4,
      'web.17a',
    ]);
  });

  it('handles new-API singleton events and series', () => {
    const single = {
      metadata: { name: 'e' },
      involvedObject: { kind: 'Node' },
      eventTime: ago(3 * M),
      reportingController: 'ctrl',
      reportingInstance: 'ctrl-1',
    };
    expect(cellsByName('', 'events', single)).toEqual(
      expect.objectContaining({ 'Last Seen': '3m', Object: 'node', Source: 'ctrl, ctrl-1', 'First Seen': '3m', Count: 1 }),
    );
    const series = { ...single, series: { count: 12, lastObservedTime: ago(5 * S) } };
    expect(cellsByName('', 'events', series)).toEqual(expect.objectContaining({ 'Last Seen': '5s', Count: 12 }));
    const unknown = { metadata: { name: 'e2' }, involvedObject: { kind: 'Pod', name: 'p' } };
    expect(cellsByName('', 'events', unknown)).toEqual(
      expect.objectContaining({ 'Last Seen': '<unknown>', 'First Seen': '<unknown>', Count: 1, Source: '' }),
    );
  });

  it('maps events.k8s.io/v1 fields onto the same columns', () => {
    const ev = {
      metadata: { name: 'e3', namespace: 'default' },
      regarding: { kind: 'Deployment', name: 'web' },
      note: 'Scaled up',
      reason: 'ScalingReplicaSet',
      type: 'Normal',
      eventTime: ago(2 * M),
      reportingController: 'deployment-controller',
      deprecatedCount: 2,
    };
    expect(table('events.k8s.io', 'events', [ev]).rows[0].cells).toEqual([
      '2m',
      'Normal',
      'ScalingReplicaSet',
      'deployment/web',
      '',
      'deployment-controller',
      'Scaled up',
      '2m',
      2,
      'e3',
    ]);
  });
});

describe('Simple built-in tables', () => {
  const meta = (name: string) => ({ name, creationTimestamp: ago(3 * D) });

  it('namespaces, secrets, serviceaccounts and leases', () => {
    expect(columns(table('', 'namespaces', []))).toEqual(['Name', 'Status', 'Age']);
    expect(table('', 'namespaces', [{ metadata: meta('ns'), status: { phase: 'Terminating' } }]).rows[0].cells).toEqual([
      'ns',
      'Terminating',
      '3d',
    ]);

    expect(columns(table('', 'secrets', []))).toEqual(['Name', 'Type', 'Data', 'Age']);
    expect(
      table('', 'secrets', [
        { metadata: meta('s'), type: 'Opaque', data: { a: 'eA==', b: 'eQ==' }, stringData: { b: 'y', c: 'z' } },
      ]).rows[0].cells,
    ).toEqual(['s', 'Opaque', 3, '3d']);

    expect(columns(table('', 'serviceaccounts', []))).toEqual(['Name', 'Secrets', 'Age']);
    expect(table('', 'serviceaccounts', [{ metadata: meta('default') }]).rows[0].cells).toEqual(['default', 0, '3d']);

    expect(columns(table('coordination.k8s.io', 'leases', []))).toEqual(['Name', 'Holder', 'Age']);
    expect(
      table('coordination.k8s.io', 'leases', [{ metadata: meta('l'), spec: { holderIdentity: 'ctrl-abc' } }]).rows[0].cells,
    ).toEqual(['l', 'ctrl-abc', '3d']);
    expect(table('coordination.k8s.io', 'leases', [{ metadata: meta('l') }]).rows[0].cells[1]).toBe('');
  });

  it('role bindings show the role and, wide, the subjects', () => {
    const rb = {
      metadata: meta('rb'),
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'view' },
      subjects: [
        { kind: 'User', name: 'alice' },
        { kind: 'User', name: 'bob' },
        { kind: 'Group', name: 'devs' },
        { kind: 'ServiceAccount', name: 'bot', namespace: 'ci' },
      ],
    };
    for (const r of ['rolebindings', 'clusterrolebindings']) {
      const t = table('rbac.authorization.k8s.io', r, [rb]);
      expect(columns(t)).toEqual(['Name', 'Role', 'Age', 'Users*', 'Groups*', 'ServiceAccounts*']);
      expect(t.rows[0].cells).toEqual(['rb', 'ClusterRole/view', '3d', 'alice, bob', 'devs', 'ci/bot']);
    }
  });

  it('roles, clusterroles, CRDs and unknown kinds use the default Name / Created At table', () => {
    const created = '2024-02-03T04:05:06Z';
    for (const [g, r] of [
      ['rbac.authorization.k8s.io', 'roles'],
      ['rbac.authorization.k8s.io', 'clusterroles'],
      ['apiextensions.k8s.io', 'customresourcedefinitions'],
      ['', 'podtemplates'],
    ]) {
      const t = table(g, r, [{ metadata: { name: 'x', creationTimestamp: created } }, { metadata: { name: 'y' } }]);
      expect(t.columnDefinitions.map((c: any) => [c.name, c.type])).toEqual([
        ['Name', 'string'],
        ['Created At', 'date'],
      ]);
      expect(t.rows.map((row: any) => row.cells)).toEqual([
        ['x', created],
        ['y', '0001-01-01T00:00:00Z'],
      ]);
    }
    // Fractional seconds and offsets are normalised to whole-second UTC.
    expect(
      table('rbac.authorization.k8s.io', 'roles', [
        { metadata: { name: 'z', creationTimestamp: '2024-02-03T06:05:06.789+02:00' } },
      ]).rows[0].cells[1],
    ).toBe('2024-02-03T04:05:06Z');
  });
});

describe('Custom resource tables', () => {
  const widget = {
    apiVersion: 'example.com/v1',
    kind: 'Widget',
    metadata: { name: 'w1', namespace: 'ns', creationTimestamp: ago(2 * H + 5 * M) },
    spec: {
      replicas: 3,
      ratio: 0.75,
      big: 1234567.5,
      enabled: true,
      color: 'red',
      size: 2.9,
      tags: { b: 1, a: '<x>' },
      list: [1, 'two'],
    },
    status: { phase: 'Ready', readyAt: ago(45 * S), bad: 'yesterday' },
  };
  const pc = (name: string, type: string, jsonPath: string, more: Partial<PrinterColumn> = {}): PrinterColumn => ({
    name,
    type,
    jsonPath,
    ...more,
  });

  it('uses Name plus each printer column, with cells typed like upstream', () => {
    const printerColumns = [
      pc('Replicas', 'integer', '.spec.replicas'),
      pc('Size', 'integer', '.spec.size'), // float -> truncated int64
      pc('Ratio', 'number', '.spec.ratio', { format: 'float', priority: 1 }),
      pc('Enabled', 'boolean', '.spec.enabled'),
      pc('Color', 'string', '.spec.color', { description: 'The colour' }),
      pc('Phase', 'string', '.status.phase'),
      pc('Ready', 'date', '.status.readyAt'),
      pc('Age', 'date', '.metadata.creationTimestamp'),
    ];
    const t = table('example.com', 'widgets', [widget], { printerColumns });
    expect(t.columnDefinitions).toEqual([
      expect.objectContaining({ name: 'Name', type: 'string', format: 'name', priority: 0 }),
      {
        name: 'Replicas',
        type: 'integer',
        format: '',
        priority: 0,
        description: 'Custom resource definition column (in JSONPath format): .spec.replicas',
      },
      expect.objectContaining({ name: 'Size', type: 'integer' }),
      {
        name: 'Ratio',
        type: 'number',
        format: 'float',
        priority: 1,
        description: 'Custom resource definition column (in JSONPath format): .spec.ratio',
      },
      expect.objectContaining({ name: 'Enabled', type: 'boolean' }),
      expect.objectContaining({ name: 'Color', description: 'The colour' }),
      expect.objectContaining({ name: 'Phase' }),
      expect.objectContaining({ name: 'Ready', type: 'date' }),
      expect.objectContaining({ name: 'Age', type: 'date' }),
    ]);
    expect(t.rows[0].cells).toEqual(['w1', 3, 2, 0.75, true, 'red', 'Ready', '45s', '125m']);
    expect(t.rows[0].object).toEqual({ kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: widget.metadata });
  });

  it('returns null for missing values and wrong types, <invalid> for bad dates', () => {
    const printerColumns = [
      pc('Missing', 'string', '.status.nothing'),
      pc('MissingInt', 'integer', '.spec.nope.deeper'),
      pc('IntFromString', 'integer', '.spec.color'),
      pc('BoolFromString', 'boolean', '.spec.color'),
      pc('NumberFromBool', 'number', '.spec.enabled'),
      pc('DateFromNumber', 'date', '.spec.replicas'),
      pc('BadDate', 'date', '.status.bad'),
      pc('Unknown type', 'object', '.spec.tags'),
    ];
    expect(table('example.com', 'widgets', [widget], { printerColumns }).rows[0].cells).toEqual([
      'w1',
      null,
      null,
      null,
      null,
      null,
      null,
      '<invalid>',
      null,
    ]);
  });

  it('prints non-string values in string columns the way JSONPath does', () => {
    const printerColumns = [
      pc('Replicas', 'string', '.spec.replicas'),
      pc('Ratio', 'string', '.spec.ratio'),
      pc('Big', 'string', '.spec.big'),
      pc('Enabled', 'string', '.spec.enabled'),
      pc('Tags', 'string', '.spec.tags'),
      pc('List', 'string', '.spec.list'),
    ];
    expect(table('example.com', 'widgets', [widget], { printerColumns }).rows[0].cells).toEqual([
      'w1',
      '3',
      '0.75',
      '1.2345675e+06',
      'true',
      '{"a":"\\u003cx\\u003e","b":1}',
      '[1,"two"]',
    ]);
  });

  it('falls back to a single Age column when the CRD declares none', () => {
    const t = table('example.com', 'widgets', [widget, { metadata: { name: 'w2' } }], { printerColumns: [] });
    expect(t.columnDefinitions.map((c: any) => [c.name, c.type])).toEqual([
      ['Name', 'string'],
      ['Age', 'date'],
    ]);
    expect(t.rows.map((r: any) => r.cells)).toEqual([
      ['w1', '125m'],
      ['w2', null],
    ]);
  });

  it('treats an evaluator error as a missing value', () => {
    const t = buildTable({
      group: 'example.com',
      resource: 'widgets',
      objects: [widget],
      printerColumns: [pc('X', 'string', '.spec[?(@')],
      resourceVersion: '1',
      now: NOW,
      evalJsonPath: () => {
        throw new Error('bad path');
      },
    });
    expect(t.rows[0].cells).toEqual(['w1', null]);
  });

  it('does not mistake a custom resource for a built-in with the same plural', () => {
    const t = table('example.com', 'pods', [widget], { printerColumns: [pc('Color', 'string', '.spec.color')] });
    expect(columns(t)).toEqual(['Name', 'Color']);
  });
});
