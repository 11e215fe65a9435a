import * as path from 'node:path';
import { spawn } from 'node:child_process';
import YAML from 'yaml';
import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';

/**
 * The real kubectl binary against the embedded API server: the commands users
 * and scripts rely on, with the output they expect.
 */
const fixtures = path.join(__dirname, '..', 'fixtures');
let c: TestCluster;

beforeAll(async () => {
  c = await startTestCluster();
  const crd = await c.kubectl(['apply', '-f', path.join(fixtures, 'widgets-crd.yaml')]);
  expect(crd.stderr).toBe('');
  expect(crd.stdout).toContain('customresourcedefinition.apiextensions.k8s.io/widgets.example.com created');
}, 60_000);

afterAll(async () => {
  await c?.cleanup();
});

test('kubectl wait --for=condition=Established on the new CRD', async () => {
  const r = await c.kubectl(['wait', '--for=condition=Established', 'crd/widgets.example.com', '--timeout=20s']);
  expect(r.stderr).toBe('');
  expect(r.stdout).toContain('condition met');
});

test('apply -f creates custom resources, and applying again is a no-op', async () => {
  const first = await c.kubectl(['apply', '-f', path.join(fixtures, 'widgets.yaml')]);
  expect(first.stderr).toBe('');
  expect(first.stdout).toContain('widget.example.com/w1 created');
  expect(first.stdout).toContain('widget.example.com/w2 created');
  const rv = (await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w1')).json.metadata.resourceVersion;
  const again = await c.kubectl(['apply', '-f', path.join(fixtures, 'widgets.yaml')]);
  expect(again.stdout).toContain('widget.example.com/w1 unchanged');
  expect(again.stdout).toContain('widget.example.com/w2 unchanged');
  const after = (await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w1')).json;
  expect(after.metadata.resourceVersion).toBe(rv);
  // Defaults from the schema were applied by the server.
  expect(after.spec.color).toBe('blue');
  expect((await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w2')).json.spec.replicas).toBe(1);
});

test('get shows the CRD printer columns; -o json and -o yaml carry the objects', async () => {
  const table = await c.kubectl(['get', 'widgets']);
  expect(table.stderr).toBe('');
  const lines = table.stdout.trim().split('\n');
  expect(lines[0].split(/\s+/)).toEqual(['NAME', 'SIZE', 'REPLICAS', 'READY', 'AGE']);
  expect(lines[1]).toMatch(/^w1\s+small\s+2\s+\d+s$/); // no Ready condition yet: an empty cell
  expect(lines[2]).toMatch(/^w2\s+large\s+1\s+\d+s$/);
  const json = JSON.parse((await c.kubectl(['get', 'widget', 'w1', '-o', 'json'])).stdout);
  expect(json.kind).toBe('Widget');
  expect(json.spec.tags).toEqual(['a', 'b']);
  const yaml = YAML.parse((await c.kubectl(['get', 'wg', '-o', 'yaml'])).stdout);
  expect(yaml.items.map((i: any) => i.metadata.name)).toEqual(['w1', 'w2']);
  const byLabel = await c.kubectl(['get', 'widgets', '-l', 'app=demo', '-o', 'name']);
  expect(byLabel.stdout.trim()).toBe('widget.example.com/w1');
  const all = await c.kubectl(['get', 'all', '-o', 'name']);
  expect(all.stdout).toContain('widget.example.com/w1');
});

test('apply --server-side', async () => {
  const doc = `apiVersion: example.com/v1
kind: Widget
metadata:
  name: w3
spec:
  size: medium
  replicas: 4
`;
  const r = await c.kubectl(['apply', '--server-side', '-f', '-'], { input: doc });
  expect(r.stderr).toBe('');
  expect(r.stdout).toContain('widget.example.com/w3 serverside-applied');
  const obj = (await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w3')).json;
  expect(obj.spec.replicas).toBe(4);
  expect(obj.metadata.managedFields.some((m: any) => m.manager === 'kubectl' && m.operation === 'Apply')).toBe(true);
  // A second manager changing an owned field conflicts, and --force-conflicts takes it over.
  const other = await c.kubectl(['apply', '--server-side', '--field-manager=other', '-f', '-'], { input: doc.replace('replicas: 4', 'replicas: 5') });
  expect(other.code).not.toBe(0);
  expect(other.stderr).toContain('conflict');
  expect(other.stderr).toContain('.spec.replicas');
  const forced = await c.kubectl(['apply', '--server-side', '--field-manager=other', '--force-conflicts', '-f', '-'], {
    input: doc.replace('replicas: 4', 'replicas: 5'),
  });
  expect(forced.code).toBe(0);
  expect((await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w3')).json.spec.replicas).toBe(5);
});

test('get -w prints a later change', async () => {
  const child = spawn('kubectl', ['get', 'widgets', '-w', '--no-headers'], {
    env: { ...process.env, KUBECONFIG: c.kubeconfigPath, HOME: path.join(c.dataDir, 'home') },
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  try {
    await eventually(() => out.includes('w1'), 15_000, 'initial rows');
    const p = await c.kubectl(['patch', 'widget', 'w2', '--type', 'merge', '-p', '{"spec":{"size":"medium"}}']);
    expect(p.stdout).toContain('widget.example.com/w2 patched');
    await eventually(() => /w2\s+medium/.test(out), 15_000, 'the watched change');
  } finally {
    child.kill();
  }
});

test('wait --for=condition=Ready sees a status change made later', async () => {
  const waiting = c.kubectl(['wait', '--for=condition=Ready', 'widget/w1', '--timeout=30s']);
  await new Promise((r) => setTimeout(r, 1000));
  const s = await c.request(
    'PATCH',
    '/apis/example.com/v1/namespaces/default/widgets/w1/status',
    { status: { conditions: [{ type: 'Ready', status: 'True', reason: 'Test' }] } },
    { 'Content-Type': 'application/merge-patch+json' },
  );
  expect(s.status).toBe(200);
  const r = await waiting;
  expect(r.stderr).toBe('');
  expect(r.stdout).toContain('widget.example.com/w1 condition met');
  const table = await c.kubectl(['get', 'widget', 'w1', '--no-headers']);
  expect(table.stdout).toMatch(/^w1\s+small\s+2\s+True\s+/);
});

test('patch --type merge and --type json; strategic merge on a custom resource is refused', async () => {
  const merge = await c.kubectl(['patch', 'widget', 'w1', '--type', 'merge', '-p', '{"spec":{"replicas":3}}']);
  expect(merge.stdout).toContain('patched');
  const json = await c.kubectl(['patch', 'widget', 'w1', '--type', 'json', '-p', '[{"op":"add","path":"/spec/tags/-","value":"c"}]']);
  expect(json.stdout).toContain('patched');
  const obj = (await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w1')).json;
  expect(obj.spec.replicas).toBe(3);
  expect(obj.spec.tags).toEqual(['a', 'b', 'c']);
  expect(obj.metadata.generation).toBe(3);
  const smp = await c.kubectl(['patch', 'widget', 'w1', '-p', '{"spec":{"replicas":4}}']);
  expect(smp.code).not.toBe(0);
  expect(smp.stderr).toContain('application/strategic-merge-patch+json is not supported');
  expect(smp.stderr).toContain('accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml');
  const invalid = await c.kubectl(['patch', 'widget', 'w1', '--type', 'merge', '-p', '{"spec":{"replicas":20}}']);
  expect(invalid.code).not.toBe(0);
  expect(invalid.stderr).toContain('spec.replicas');
  expect(invalid.stderr).toContain('less than or equal to 10');
});

test('scale uses the scale subresource', async () => {
  const r = await c.kubectl(['scale', 'widget', 'w2', '--replicas=7']);
  expect(r.stdout).toContain('scaled');
  expect((await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w2')).json.spec.replicas).toBe(7);
});

test('label and annotate', async () => {
  expect((await c.kubectl(['label', 'widget', 'w2', 'tier=gold'])).stdout).toContain('labeled');
  expect((await c.kubectl(['annotate', 'widget', 'w2', 'note=hello world'])).stdout).toContain('annotated');
  const obj = (await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w2')).json;
  expect(obj.metadata.labels.tier).toBe('gold');
  expect(obj.metadata.annotations.note).toBe('hello world');
  const rm = await c.kubectl(['label', 'widget', 'w2', 'tier-']);
  expect(rm.stdout).toContain('unlabeled');
  expect((await c.kubectl(['get', 'widgets', '-l', 'tier=gold', '-o', 'name'])).stdout.trim()).toBe('');
});

test('describe shows the object and its events', async () => {
  const ev = await c.request('POST', '/api/v1/namespaces/default/events', {
    apiVersion: 'v1',
    kind: 'Event',
    metadata: { name: 'w1.test' },
    involvedObject: { apiVersion: 'example.com/v1', kind: 'Widget', name: 'w1', namespace: 'default', uid: (await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w1')).json.metadata.uid },
    reason: 'Polished',
    message: 'the widget was polished',
    type: 'Normal',
    count: 1,
    firstTimestamp: new Date().toISOString(),
    lastTimestamp: new Date().toISOString(),
    source: { component: 'test' },
  });
  expect(ev.status).toBe(201);
  const r = await c.kubectl(['describe', 'widget', 'w1']);
  expect(r.stderr).toBe('');
  expect(r.stdout).toMatch(/Name:\s+w1/);
  expect(r.stdout).toMatch(/Size:\s+small/);
  expect(r.stdout).toContain('Polished');
  expect(r.stdout).toContain('the widget was polished');
});

test('delete waits on a finalizer and completes when it is released', async () => {
  await c.kubectl(['patch', 'widget', 'w2', '--type', 'merge', '-p', '{"metadata":{"finalizers":["example.com/hold"]}}']);
  const del = await c.kubectl(['delete', 'widget', 'w2', '--wait=false']);
  expect(del.stdout).toContain('widget.example.com "w2" deleted');
  const held = (await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/w2')).json;
  expect(held.metadata.deletionTimestamp).toBeDefined();
  expect(held.metadata.finalizers).toEqual(['example.com/hold']);
  // A blocking delete waits until the finalizer is released.
  const waiting = c.kubectl(['delete', 'widget', 'w2', '--timeout=30s']);
  await new Promise((r) => setTimeout(r, 1000));
  await c.kubectl(['patch', 'widget', 'w2', '--type', 'json', '-p', '[{"op":"remove","path":"/metadata/finalizers"}]']);
  const done = await waiting;
  expect(done.code).toBe(0);
  const gone = await c.kubectl(['get', 'widget', 'w2']);
  expect(gone.code).not.toBe(0);
  expect(gone.stderr).toContain('NotFound');
  expect(gone.stderr).toContain('widgets.example.com "w2" not found');
});

test('built-in kinds: namespaces, configmaps, client-side apply with strategic merge, tables', async () => {
  const ns = await c.kubectl(['get', 'namespaces']);
  expect(ns.stdout.split('\n')[0].split(/\s+/)).toEqual(['NAME', 'STATUS', 'AGE']);
  expect(ns.stdout).toMatch(/kube-system\s+Active/);
  const deploy = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1
          env:
            - {name: A, value: "1"}
        - name: side
          image: busybox:1
`;
  expect((await c.kubectl(['apply', '-f', '-'], { input: deploy })).stdout).toContain('deployment.apps/web created');
  // Change one container and drop the sidecar: kubectl computes a strategic merge patch.
  const changed = deploy.replace('nginx:1', 'nginx:2').replace(/ {8}- name: side\n {10}image: busybox:1\n/, '');
  const r = await c.kubectl(['apply', '-f', '-'], { input: changed });
  expect(r.stderr).toBe('');
  expect(r.stdout).toContain('deployment.apps/web configured');
  const d = (await c.request('GET', '/apis/apps/v1/namespaces/default/deployments/web')).json;
  expect(d.spec.template.spec.containers.map((x: any) => `${x.name}=${x.image}`)).toEqual(['web=nginx:2']);
  expect(d.spec.template.spec.containers[0].env).toEqual([{ name: 'A', value: '1' }]);
  expect(d.metadata.generation).toBe(2);
  const cm = await c.kubectl(['apply', '-f', '-'], { input: 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: "1"\n  b: "2"\n' });
  expect(cm.stdout).toContain('configmap/settings created');
  const cms = await c.kubectl(['get', 'configmaps', 'settings']);
  expect(cms.stdout.split('\n')[1]).toMatch(/^settings\s+2\s+\d+s$/);
  const explain = await c.kubectl(['explain', 'widgets.spec']);
  expect(explain.stdout).toContain('replicas');
});

test('schema violations are reported by kubectl with field paths', async () => {
  const bad = 'apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  size: huge\n  replicas: -1\n';
  const r = await c.kubectl(['apply', '-f', '-'], { input: bad });
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain('spec.size');
  expect(r.stderr).toContain('spec.replicas');
  const unknown = await c.kubectl(['apply', '-f', '-'], { input: 'apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: odd\nspec:\n  size: small\n  bogus: 1\n' });
  expect(unknown.code).not.toBe(0);
  expect(unknown.stderr).toContain('unknown field "spec.bogus"');
  expect((await c.request('GET', '/apis/example.com/v1/namespaces/default/widgets/bad')).status).toBe(404);
});
