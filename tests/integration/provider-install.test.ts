import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually, tempDir } from '../helpers/cluster';
import { startProvider, ProviderHarness, DIFF_NONE, DIFF_SOME } from '../helpers/provider';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { allCrds } from '../../controller/api/crds';
import { UNKNOWN } from '../../provider/values';

/**
 * kubevm:index:Install over the real gRPC wire (the plugin executable), against
 * the embedded cluster with its in-process controller and a sim agent:
 * embedded mode (CRDs and configuration only), cluster mode (RBAC, Deployment,
 * DaemonSet really written, checked with kubectl), idempotent server-side apply,
 * drift, rollout waits, and a Delete that refuses to take kubevm objects with it.
 */
const INSTALL = 'kubevm:index:Install';
const IMAGE = 'registry.example.com/kubevm:0.1.0';
const CRD_NAMES = allCrds().map((c) => c.metadata.name as string);

let c: TestCluster;
let rt: Runtime | undefined;
let p: ProviderHarness;

const kubectlJson = async (args: string[]) => {
  const r = await c.kubectl([...args, '-o', 'json']);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout);
};
const exists = async (args: string[]) => (await c.kubectl(['get', ...args])).code === 0;
const config = async (ns: string) =>
  JSON.parse((await kubectlJson(['get', 'configmap', 'kubevm-config', '-n', ns])).data['config.json']);
const errorOf = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (e) => e,
  );

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startRuntime({ kubeconfigPath: c.kubeconfigPath, dataDir: c.dataDir, nodes: 1, backend: 'sim' });
  p = await startProvider({ kubeconfigPath: c.kubeconfigPath, project: 'install-test' });
}, 60_000);

afterAll(async () => {
  const t0 = Date.now();
  await p?.close();
  const t1 = Date.now();
  await rt?.stop();
  const t2 = Date.now();
  await c?.cleanup();
  // Teardown once took over 60 s on a loaded CI machine: say where, if it is slow again.
  if (Date.now() - t0 > 20_000) console.warn(`slow teardown: provider ${t1 - t0} ms, runtime ${t2 - t1} ms, cluster ${Date.now() - t2} ms`);
}, 180_000);

test('the embedded API server carries a marker in /version', async () => {
  const v = (await c.request('GET', '/version')).json;
  expect(v.kubevm).toBe('embedded');
  expect(v.gitVersion).toMatch(/^v1\.\d+/);
});

test('schema.json describes exactly the properties the provider accepts and returns', async () => {
  const schema = JSON.parse(fs.readFileSync(path.join(__dirname, '../../schema.json'), 'utf8')).resources[INSTALL];
  const { inputs, failures } = await p.check(INSTALL, 'probe', {});
  expect(failures).toEqual([]);
  const preview = await p.create(INSTALL, 'probe', inputs, { preview: true });
  expect(Object.keys(preview.props).every((k) => k in schema.properties)).toBe(true);
  expect(Object.keys(schema.properties).sort()).toEqual(
    [...Object.keys(schema.inputProperties), 'components', 'crds', 'effectiveMode', 'message', 'ownsNamespace'].sort(),
  );
  expect(schema.inputProperties.namespace.willReplaceOnChanges).toBe(true);
});

test('Check names the property, the value and the rule', async () => {
  const { failures } = await p.check(INSTALL, 'bad', {
    namespace: 'Not_A_Label',
    mode: 'everywhere',
    backend: 'xen',
    allowedRoots: ['/srv/ok', 'relative/dir', '/srv/../etc'],
    dataDir: 7,
    nodeSelector: { zone: 3 },
    colour: 'red',
  });
  const byProp = Object.fromEntries(failures.map((f) => [f.property, f.reason]));
  expect(byProp.namespace).toContain('"Not_A_Label" must be a DNS label');
  expect(byProp.mode).toBe('mode: value "everywhere" must be one of auto, embedded, cluster');
  expect(byProp.backend).toContain('one of qemu, sim');
  expect(byProp['allowedRoots[1]']).toContain('absolute path');
  expect(byProp['allowedRoots[2]']).toContain("without '..'");
  expect(byProp['allowedRoots[0]']).toBeUndefined();
  expect(byProp.dataDir).toContain('must be a string');
  expect(byProp['nodeSelector["zone"]']).toContain('must be a string');
  expect(byProp.colour).toContain('unknown property of kubevm:index:Install');
  const cluster = await p.check(INSTALL, 'bad', { mode: 'cluster' });
  expect(cluster.failures).toEqual([
    { property: 'image', reason: 'image: required when mode is "cluster" (the image of the controller and agent containers)' },
  ]);
  // Unknown values (preview) are not judged; the namespace defaults to kubevm-system.
  const prev = await p.check(INSTALL, 'x', { mode: 'cluster', image: UNKNOWN });
  expect(prev.failures).toEqual([]);
  expect(prev.inputs.namespace).toBe('kubevm-system');
});

describe('embedded mode', () => {
  const ID = 'kubevm-system/kubevm-config';
  let inputs: any;
  let props: any;

  test('create (preview), create: CRDs and configuration only, and the outputs say so', async () => {
    ({ inputs } = await p.check(INSTALL, 'kubevm', { allowedRoots: ['/srv/kubevm'] }));
    const preview = await p.create(INSTALL, 'kubevm', inputs, { preview: true });
    expect(preview.props).toMatchObject({ effectiveMode: UNKNOWN, components: UNKNOWN, message: UNKNOWN, crds: CRD_NAMES });
    expect(preview.id).toBe(ID); // the id the create will have
    expect(await exists(['namespace', 'kubevm-system'])).toBe(false); // a preview changes nothing

    const made = await p.create(INSTALL, 'kubevm', inputs);
    props = made.props;
    expect(made.id).toBe(ID);
    expect(props).toMatchObject({
      namespace: 'kubevm-system',
      allowedRoots: ['/srv/kubevm'],
      effectiveMode: 'embedded',
      crds: CRD_NAMES,
      components: ['Namespace/kubevm-system', 'ConfigMap/kubevm-system/kubevm-config'],
      ownsNamespace: true,
    });
    expect(props.message).toContain("kubevm's embedded cluster");
    expect(props.message).toContain('1 node agent (node-0) run in the cluster process');
    expect(props.message).toContain('no Deployment or DaemonSet');

    // Really there, written by server-side apply under the kubevm-install field manager.
    const cm = await kubectlJson(['get', 'configmap', 'kubevm-config', '-n', 'kubevm-system', '--show-managed-fields']);
    expect(JSON.parse(cm.data['config.json'])).toEqual({
      namespace: 'kubevm-system',
      mode: 'embedded',
      backend: 'qemu',
      allowedRoots: ['/srv/kubevm'],
      dataDir: '/var/lib/kubevm',
    });
    expect(cm.metadata.managedFields.map((m: any) => [m.manager, m.operation])).toContainEqual(['kubevm-install', 'Apply']);
    const crds = await kubectlJson(['get', 'crd']);
    expect(crds.items.map((x: any) => x.metadata.name)).toEqual(expect.arrayContaining(CRD_NAMES));
    expect(
      (await kubectlJson(['get', 'deployments,daemonsets,serviceaccounts', '-n', 'kubevm-system'])).items.map(
        (x: any) => `${x.kind}/${x.metadata.name}`,
      ),
    ).toEqual([
      'ServiceAccount/default', // every namespace gets one from the API server
    ]);
    // A second Create of the same installation is refused with the id to import.
    const again = await errorOf(p.create(INSTALL, 'kubevm2', inputs));
    expect(again.message).toContain(
      `kubevm is already installed in namespace kubevm-system (ConfigMap ${ID}); import it with id "${ID}"`,
    );
  });

  test('diff: namespace replaces, the rest is applied in place, a spelled-out default is no change', async () => {
    expect((await p.diff(INSTALL, 'kubevm', props, inputs, ID)).changes).toBe(DIFF_NONE);
    expect(
      (await p.diff(INSTALL, 'kubevm', props, { ...inputs, mode: 'auto', backend: 'qemu', waitForRollout: true }, ID)).changes,
    ).toBe(DIFF_NONE);
    const moved = await p.diff(INSTALL, 'kubevm', props, { ...inputs, namespace: 'kubevm-elsewhere' }, ID);
    expect(moved).toMatchObject({
      detailed: { namespace: 'UPDATE_REPLACE' },
      replaces: ['namespace'],
      deleteBeforeReplace: false,
    });
    const live = await p.diff(
      INSTALL,
      'kubevm',
      props,
      { ...inputs, backend: 'sim', allowedRoots: ['/srv/kubevm', '/srv/more'] },
      ID,
    );
    expect(live).toMatchObject({ changes: DIFF_SOME, replaces: [], detailed: { backend: 'UPDATE', 'allowedRoots[1]': 'ADD' } });
  });

  test('update (preview), update, and applying the same inputs again changes nothing', async () => {
    const news = { ...inputs, backend: 'sim', allowedRoots: ['/srv/kubevm', '/srv/more'] };
    const preview = await p.update(INSTALL, 'kubevm', ID, props, news, { preview: true });
    expect(preview).toMatchObject({ backend: 'sim', message: UNKNOWN, ownsNamespace: true });
    expect((await config('kubevm-system')).backend).toBe('qemu');

    props = await p.update(INSTALL, 'kubevm', ID, props, news);
    inputs = news;
    expect(props).toMatchObject({ backend: 'sim', effectiveMode: 'embedded' });
    expect(await config('kubevm-system')).toMatchObject({ backend: 'sim', allowedRoots: ['/srv/kubevm', '/srv/more'] });

    const versions = async () =>
      (
        await kubectlJson([
          'get',
          'configmap/kubevm-config',
          'namespace/kubevm-system',
          ...CRD_NAMES.map((n) => `crd/${n}`),
          '-n',
          'kubevm-system',
        ])
      ).items.map((x: any) => `${x.kind}/${x.metadata.name}/${x.metadata.resourceVersion}`);
    const before = await versions();
    expect(before).toHaveLength(2 + CRD_NAMES.length);
    props = await p.update(INSTALL, 'kubevm', ID, props, news);
    expect(await versions()).toEqual(before);
  });

  test('a backend the embedded agents do not run draws a warning', async () => {
    // The runtime's agent runs sim; the previous update configured sim: no warning yet.
    expect(p.logs.some((l) => l.message.includes('in-process agents take their backend'))).toBe(false);
    props = await p.update(INSTALL, 'kubevm', ID, props, { ...inputs, backend: 'qemu' });
    expect(
      p.logs.some(
        (l) =>
          l.severity === 2 && l.message.includes("backend qemu is configured, but the embedded cluster's node agents run sim"),
      ),
    ).toBe(true);
    props = await p.update(INSTALL, 'kubevm', ID, props, inputs);
  });

  test('read: zero diff when untouched, an out-of-band edit shows as drift, import round-trips', async () => {
    const refreshed = await p.read(INSTALL, 'kubevm', ID, props, inputs);
    expect(refreshed.inputs).toEqual(inputs);
    expect(refreshed.props).toEqual(props);
    expect((await p.diff(INSTALL, 'kubevm', refreshed.props, inputs, ID)).changes).toBe(DIFF_NONE);

    const cm = await kubectlJson(['get', 'configmap', 'kubevm-config', '-n', 'kubevm-system']);
    const edited = { ...JSON.parse(cm.data['config.json']), dataDir: '/data/kubevm' };
    const r = await c.kubectl([
      'patch',
      'configmap',
      'kubevm-config',
      '-n',
      'kubevm-system',
      '--type',
      'merge',
      '-p',
      JSON.stringify({ data: { 'config.json': JSON.stringify(edited) } }),
    ]);
    expect(r.stderr).toBe('');
    const drifted = await p.read(INSTALL, 'kubevm', ID, props, inputs);
    expect(drifted.inputs.dataDir).toBe('/data/kubevm');
    expect((await p.diff(INSTALL, 'kubevm', drifted.props, inputs, ID)).detailed).toEqual({ dataDir: 'UPDATE' });
    props = await p.update(INSTALL, 'kubevm', ID, drifted.props, inputs);
    expect((await config('kubevm-system')).dataDir).toBe('/var/lib/kubevm');

    const imported = await p.read(INSTALL, 'kubevm', ID);
    expect(imported.inputs).toEqual(inputs);
    expect((await p.diff(INSTALL, 'kubevm', imported.props, inputs, ID)).changes).toBe(DIFF_NONE);
  });

  test('delete removes the configuration and the namespace it made, and keeps the CRDs the runtime uses', async () => {
    await p.del(INSTALL, 'kubevm', ID, props);
    expect(await exists(['namespace', 'kubevm-system'])).toBe(false);
    expect((await kubectlJson(['get', 'crd'])).items.map((x: any) => x.metadata.name)).toEqual(expect.arrayContaining(CRD_NAMES));
    expect((await p.read(INSTALL, 'kubevm', ID, props, inputs)).id).toBe('');
    // The in-process runtime still works: a Network becomes Ready.
    const net = {
      apiVersion: 'kubevm.dev/v1alpha1',
      kind: 'Network',
      metadata: { name: 'after-install', namespace: 'default' },
      spec: { type: 'pod' },
    };
    expect((await c.request('POST', '/apis/kubevm.dev/v1alpha1/namespaces/default/networks', net)).status).toBe(201);
    await eventually(
      async () =>
        (await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/networks/after-install')).json.status?.phase ===
        'Ready',
      10_000,
      'the Network to be Ready',
    );
    expect((await c.request('DELETE', '/apis/kubevm.dev/v1alpha1/namespaces/default/networks/after-install')).status).toBe(200);
  });
});

describe("on a cluster that is not kubevm's embedded one", () => {
  // Another cluster's API server as far as Install's first steps see it: upstream's /version (no kubevm
  // marker) and 404 for the install record. Anything else it is asked is recorded: nothing may be written.
  let server: http.Server;
  let other: ProviderHarness;
  let dir: string;
  const requests: string[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      const [code, body] =
        req.url === '/version'
          ? [200, { major: '1', minor: '31', gitVersion: 'v1.31.2' }]
          : [404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', reason: 'NotFound', code: 404, message: 'not found' }];
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    dir = tempDir();
    const kubeconfig = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: 'other',
          cluster: { server: `http://127.0.0.1:${(server.address() as any).port}`, 'insecure-skip-tls-verify': true },
        },
      ],
      users: [{ name: 'u', user: { token: 'other-token' } }],
      contexts: [{ name: 'other', context: { cluster: 'other', user: 'u' } }],
      'current-context': 'other',
    };
    fs.writeFileSync(path.join(dir, 'kubeconfig'), JSON.stringify(kubeconfig));
    other = await startProvider({ kubeconfigPath: path.join(dir, 'kubeconfig'), project: 'install-other' });
  }, 60_000);

  afterAll(async () => {
    await other?.close();
    server?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('mode embedded is refused; mode auto chooses cluster and needs an image; nothing is written', async () => {
    const embedded = await errorOf(other.create(INSTALL, 'i', { namespace: 'kubevm-system', mode: 'embedded' }));
    expect(embedded.message).toContain(
      `mode: "embedded" needs kubevm's embedded cluster (kubevm cluster up), but this API server (v1.31.2) is not one`,
    );
    const auto = await errorOf(other.create(INSTALL, 'i', { namespace: 'kubevm-system' }));
    expect(auto.message).toContain(
      "image: required in cluster mode (mode auto chose cluster: this API server, v1.31.2, is not kubevm's embedded one)",
    );
    expect(requests).toContain('GET /version');
    expect(requests.filter((r) => !r.startsWith('GET '))).toEqual([]);
  });
});

describe('cluster mode', () => {
  const NS = 'kubevm-cluster';
  const ID = `${NS}/kubevm-config`;
  let inputs: any;
  let props: any;

  test('create: RBAC, the controller Deployment and the privileged agent DaemonSet exist afterwards', async () => {
    ({ inputs } = await p.check(INSTALL, 'cluster', {
      namespace: NS,
      mode: 'cluster',
      image: IMAGE,
      waitForRollout: false, // the embedded API server runs no workload controllers
      nodeSelector: { 'kubevm.dev/node': 'true' },
      allowedRoots: ['/srv/shares'],
    }));
    const preview = await p.create(INSTALL, 'cluster', inputs, { preview: true });
    expect(preview.props.effectiveMode).toBe('cluster');
    const made = await p.create(INSTALL, 'cluster', inputs);
    props = made.props;
    expect(made.id).toBe(ID);
    expect(props.components).toEqual([
      `Namespace/${NS}`,
      `ServiceAccount/${NS}/kubevm`,
      `ClusterRole/kubevm:${NS}`,
      `ClusterRoleBinding/kubevm:${NS}`,
      `Deployment/${NS}/kubevm-controller`,
      `DaemonSet/${NS}/kubevm-agent`,
      `ConfigMap/${NS}/kubevm-config`,
    ]);
    expect(props).toMatchObject({ effectiveMode: 'cluster', crds: CRD_NAMES, ownsNamespace: true });
    expect(props.message).toContain('rollout was not awaited (waitForRollout: false)');
    expect(p.logs.some((l) => l.severity === 2 && l.message.includes("cluster mode on kubevm's embedded cluster"))).toBe(true);

    const dep = await kubectlJson(['get', 'deployment', 'kubevm-controller', '-n', NS]);
    expect(dep.spec.template.spec.serviceAccountName).toBe('kubevm');
    expect(dep.spec.template.spec.containers[0]).toMatchObject({
      image: IMAGE,
      command: ['kubevm', 'controller', '--config', '/etc/kubevm/config.json'],
    });
    const ds = await kubectlJson(['get', 'daemonset', 'kubevm-agent', '-n', NS]);
    const pod = ds.spec.template.spec;
    expect(pod.containers[0].securityContext.privileged).toBe(true);
    expect(pod.hostNetwork).toBe(true);
    expect(pod.nodeSelector).toEqual({ 'kubevm.dev/node': 'true' });
    expect(pod.volumes).toEqual(
      expect.arrayContaining([
        { name: 'dev-kvm', hostPath: { path: '/dev/kvm', type: 'CharDevice' } },
        { name: 'host-0', hostPath: { path: '/var/lib/kubevm', type: 'DirectoryOrCreate' } },
        { name: 'host-1', hostPath: { path: '/srv/shares', type: 'DirectoryOrCreate' } },
      ]),
    );
    expect(pod.containers[0].volumeMounts).toEqual(
      expect.arrayContaining([
        { name: 'dev-kvm', mountPath: '/dev/kvm' },
        { name: 'host-1', mountPath: '/srv/shares' },
      ]),
    );
    const binding = await kubectlJson(['get', 'clusterrolebinding', `kubevm:${NS}`]);
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'kubevm', namespace: NS }]);
    const role = await kubectlJson(['get', 'clusterrole', `kubevm:${NS}`]);
    expect(role.rules[0]).toEqual({ apiGroups: ['kubevm.dev'], resources: ['*'], verbs: ['*'] });
    expect(await config(NS)).toMatchObject({ mode: 'cluster', namespace: NS });
  });

  test('diff, update (preview), update: a new image rolls into the Deployment and the DaemonSet', async () => {
    const news = { ...inputs, image: `${IMAGE}-2` };
    expect((await p.diff(INSTALL, 'cluster', props, news, ID)).detailed).toEqual({ image: 'UPDATE' });
    const preview = await p.update(INSTALL, 'cluster', ID, props, news, { preview: true });
    expect(preview).toMatchObject({ image: `${IMAGE}-2`, effectiveMode: 'cluster', components: UNKNOWN });
    const gen = (await kubectlJson(['get', 'deployment', 'kubevm-controller', '-n', NS])).metadata.generation;
    props = await p.update(INSTALL, 'cluster', ID, props, news);
    inputs = news;
    const dep = await kubectlJson(['get', 'deployment', 'kubevm-controller', '-n', NS]);
    expect(dep.spec.template.spec.containers[0].image).toBe(`${IMAGE}-2`);
    expect(dep.metadata.generation).toBe(gen + 1);
    expect((await kubectlJson(['get', 'daemonset', 'kubevm-agent', '-n', NS])).spec.template.spec.containers[0].image).toBe(
      `${IMAGE}-2`,
    );

    // Applying the same inputs again writes nothing.
    const versions = async () =>
      (
        await kubectlJson([
          'get',
          'deployment/kubevm-controller',
          'daemonset/kubevm-agent',
          'serviceaccount/kubevm',
          'configmap/kubevm-config',
          `clusterrole/kubevm:${NS}`,
          `clusterrolebinding/kubevm:${NS}`,
          '-n',
          NS,
        ])
      ).items.map((x: any) => `${x.kind}/${x.metadata.resourceVersion}`);
    const before = await versions();
    expect(before).toHaveLength(6);
    props = await p.update(INSTALL, 'cluster', ID, props, news);
    expect(await versions()).toEqual(before);
  });

  test('read: zero diff; an out-of-band image change shows as drift', async () => {
    const refreshed = await p.read(INSTALL, 'cluster', ID, props, inputs);
    expect(refreshed.inputs).toEqual(inputs);
    expect((await p.diff(INSTALL, 'cluster', refreshed.props, inputs, ID)).changes).toBe(DIFF_NONE);
    const r = await c.kubectl(['set', 'image', 'deployment/kubevm-controller', '-n', NS, `controller=${IMAGE}-hotfix`]);
    expect(r.code).toBe(0);
    const drifted = await p.read(INSTALL, 'cluster', ID, props, inputs);
    expect((await p.diff(INSTALL, 'cluster', drifted.props, inputs, ID)).detailed).toEqual({ image: 'UPDATE' });
    props = await p.update(INSTALL, 'cluster', ID, drifted.props, inputs);
    expect((await kubectlJson(['get', 'deployment', 'kubevm-controller', '-n', NS])).spec.template.spec.containers[0].image).toBe(
      `${IMAGE}-2`,
    );
  });

  test('switching to embedded mode prunes the workloads and RBAC', async () => {
    const news = { ...inputs, mode: 'embedded' };
    const embedded = await p.update(INSTALL, 'cluster', ID, props, news);
    expect(embedded.components).toEqual([`Namespace/${NS}`, `ConfigMap/${NS}/kubevm-config`]);
    expect(await exists(['deployment', 'kubevm-controller', '-n', NS])).toBe(false);
    expect(await exists(['clusterrole', `kubevm:${NS}`])).toBe(false);
    props = await p.update(INSTALL, 'cluster', ID, embedded, inputs);
    expect(props.components).toHaveLength(7);
    expect(await exists(['daemonset', 'kubevm-agent', '-n', NS])).toBe(true);
  });

  test('delete refuses, and deletes nothing, while kubevm objects exist', async () => {
    const net = {
      apiVersion: 'kubevm.dev/v1alpha1',
      kind: 'Network',
      metadata: { name: 'keep-me', namespace: 'default' },
      spec: { type: 'pod' },
    };
    expect((await c.request('POST', '/apis/kubevm.dev/v1alpha1/namespaces/default/networks', net)).status).toBe(201);
    const err = await errorOf(p.del(INSTALL, 'cluster', ID, props));
    expect(err.message).toContain(`refusing to delete the kubevm CRDs of Install ${ID}`);
    expect(err.message).toContain('1 Network (default/keep-me)');
    expect(err.message).toContain('set removeCrds: false');
    expect(err.message).toContain('Nothing was deleted.');
    expect(await exists(['deployment', 'kubevm-controller', '-n', NS])).toBe(true);
    expect(await exists(['networks.kubevm.dev', 'keep-me', '-n', 'default'])).toBe(true);
  });

  test('with removeCrds false, delete uninstalls and keeps the CRDs and the objects', async () => {
    const news = { ...inputs, removeCrds: false };
    expect((await p.diff(INSTALL, 'cluster', props, news, ID)).detailed).toEqual({ removeCrds: 'UPDATE' });
    props = await p.update(INSTALL, 'cluster', ID, props, news);
    await p.del(INSTALL, 'cluster', ID, props);
    for (const what of [
      ['namespace', NS],
      ['clusterrole', `kubevm:${NS}`],
      ['clusterrolebinding', `kubevm:${NS}`],
    ])
      expect(await exists(what)).toBe(false);
    expect(await exists(['networks.kubevm.dev', 'keep-me', '-n', 'default'])).toBe(true);
    expect((await kubectlJson(['get', 'crd'])).items.map((x: any) => x.metadata.name)).toEqual(expect.arrayContaining(CRD_NAMES));
    expect((await c.request('DELETE', '/apis/kubevm.dev/v1alpha1/namespaces/default/networks/keep-me')).status).toBe(200);
  });

  test('waitForRollout: waits for the rollout status a workload controller reports; times out with a hint without one', async () => {
    const ns = 'kubevm-rollout';
    const id = `${ns}/kubevm-config`;
    const { inputs: i } = await p.check(INSTALL, 'rollout', { namespace: ns, mode: 'cluster', image: IMAGE, removeCrds: false });
    const err = await errorOf(p.create(INSTALL, 'rollout', i, { timeout: 2 }));
    expect(err.message).toMatch(
      new RegExp(`Deployment ${ns}/kubevm-controller to roll out timed out after \\ds\\. Last observed: no status yet`),
    );
    expect(err.message).toContain('set waitForRollout: false there');
    expect(err.metadata.get('grpc-status-details-bin').length).toBe(1); // ErrorResourceInitFailed: the objects exist

    // Play the workload controllers: report finished rollouts while the update waits.
    const waiting = p.update(INSTALL, 'rollout', id, {}, i, { timeout: 60 });
    const statusOf = async (kind: string, name: string, status: (gen: number) => any) => {
      const obj = (await c.request('GET', `/apis/apps/v1/namespaces/${ns}/${kind}/${name}`)).json;
      const r = await c.request(
        'PATCH',
        `/apis/apps/v1/namespaces/${ns}/${kind}/${name}/status`,
        { status: status(obj.metadata.generation) },
        { 'Content-Type': 'application/merge-patch+json' },
      );
      expect(r.status).toBe(200);
    };
    await eventually(
      () => p.logs.some((l) => l.message.startsWith(`waiting for Deployment ${ns}/kubevm-controller to roll out`)),
      30_000,
      'the rollout wait',
    );
    await statusOf('deployments', 'kubevm-controller', (g) => ({
      observedGeneration: g,
      replicas: 1,
      updatedReplicas: 1,
      readyReplicas: 1,
      availableReplicas: 1,
    }));
    await statusOf('daemonsets', 'kubevm-agent', (g) => ({
      observedGeneration: g,
      desiredNumberScheduled: 1,
      currentNumberScheduled: 1,
      updatedNumberScheduled: 1,
      numberReady: 1,
      numberAvailable: 1,
      numberMisscheduled: 0,
    }));
    const done = await waiting;
    expect(done.message).toContain('both rolled out');
    await p.del(INSTALL, 'rollout', id, done);
    expect(await exists(['namespace', ns])).toBe(false);
  });

  test('delete with removeCrds removes the CRDs once no kubevm object is left', async () => {
    // The in-process controller and agents watch the CRDs: stop them first, as an operator would.
    await rt!.stop();
    rt = undefined;
    const ns = 'kubevm-last';
    const { inputs: i } = await p.check(INSTALL, 'last', { namespace: ns, mode: 'cluster', image: IMAGE, waitForRollout: false });
    const made = await p.create(INSTALL, 'last', i);
    await p.del(INSTALL, 'last', made.id, made.props);
    const crds = (await kubectlJson(['get', 'crd'])).items.map((x: any) => x.metadata.name);
    expect(crds.filter((n: string) => n.endsWith('.kubevm.dev'))).toEqual([]);
    expect(await exists(['namespace', ns])).toBe(false);
  });
});

test('secrets and tokens never reach the logs', () => {
  const token = /token:\s*(\S+)/.exec(fs.readFileSync(c.kubeconfigPath, 'utf8'))?.[1];
  const all = p.stderr() + p.logs.map((l) => l.message).join('\n');
  if (token) expect(all).not.toContain(token);
  expect(all).not.toContain('BEGIN CERTIFICATE');
});
