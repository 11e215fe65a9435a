import * as fs from 'node:fs';
import * as path from 'node:path';
import { startTestCluster, TestCluster, tempDir } from '../helpers/cluster';
import { startProvider, ProviderHarness } from '../helpers/provider';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import { SIM_CAPABILITIES } from '../../controller/hal/sim/backend';
import { runEngine, type EngineOptions } from '../../engine/engine';
import { SECRET_SIG, SIG_KEY, secret, isSecret } from '../../provider/values';

/**
 * The provider's functions (Invoke) and its fail-fast waits, over the real gRPC
 * wire against the embedded cluster with two sim node agents whose backend lacks
 * the `filesystem` capabilities. The plugin is started in its shimless form, the
 * way the Pulumi CLI's Node language host runs a PulumiPlugin.yaml folder. Then the
 * same functions from a real Pulumi program through the local engine, in preview and up.
 */
const VM = 'kubevm:index:VirtualMachine';
const VOL = 'kubevm:index:Volume';
const GET_VM = 'kubevm:index:getVirtualMachine';
const GET_NODES = 'kubevm:index:getNodeCapabilities';
const USER_DATA = '#cloud-config\npassword: invoke-secret-hunter2\n';
const CAPS = SIM_CAPABILITIES.filter((c) => c !== 'filesystem' && c !== 'hotplug-filesystem');

let c: TestCluster;
let rt: Runtime;
let p: ProviderHarness;

const errorOf = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (e) => e,
  );

/** Check → Create, as the engine does; returns the checked inputs and the created outputs. */
async function up(type: string, name: string, news: any, timeout = 0) {
  const { inputs, failures } = await p.check(type, name, news);
  expect(failures).toEqual([]);
  const made = await p.create(type, name, inputs, { timeout });
  return { inputs, ...made };
}

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startSimRuntime(c, { nodes: 2, nodeCapacity: { cpu: 4, memoryBytes: 2 * 1024 ** 3 }, sim: { capabilities: CAPS, delays: { startMs: 20, guestReadyMs: 50, stopMs: 20, jitter: 0 } } });
  p = await startProvider({ kubeconfigPath: c.kubeconfigPath, launch: 'shimless', project: 'functions-test' });
}, 90_000);

afterAll(async () => {
  await p?.close();
  await rt?.stop();
  await c?.cleanup();
});

test('the shimless plugin folder (PulumiPlugin.yaml + package.json main) serves the provider', async () => {
  const { providerPb, emptyPb } = await import('../../provider/proto');
  const info = await p.rpc('getPluginInfo', new emptyPb.Empty());
  expect(info.getVersion()).toBe(JSON.parse(fs.readFileSync(path.join(__dirname, '../../package.json'), 'utf8')).version);
  const schema = JSON.parse((await p.rpc('getSchema', new (providerPb as any).GetSchemaRequest())).getSchema());
  expect(Object.keys(schema.functions).sort()).toEqual([GET_NODES, GET_VM, 'kubevm:index:listBackups']);
  expect(schema.resources['kubevm:index:Install']).toBeDefined();
});

describe('getNodeCapabilities', () => {
  test('lists the nodes the agents registered, with their backends and capabilities', async () => {
    const { value, failures } = await p.invoke(GET_NODES, {});
    expect(failures).toEqual([]);
    expect(value).toEqual({
      nodes: [
        { name: 'node-0', backends: ['sim'], capabilities: [...CAPS] },
        { name: 'node-1', backends: ['sim'], capabilities: [...CAPS] },
      ],
    });
    expect(value.nodes[0].capabilities).not.toContain('filesystem');
  });

  test('one node; a node that is not there or runs no agent is a clear error; a bad name is a failure', async () => {
    expect((await p.invoke(GET_NODES, { node: 'node-1' })).value.nodes.map((n: any) => n.name)).toEqual(['node-1']);
    expect((await errorOf(p.invoke(GET_NODES, { node: 'node-9' }))).message).toContain('Node node-9 not found');
    const plain = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'plain-node' } };
    expect((await c.request('POST', '/api/v1/nodes', plain)).status).toBe(201);
    expect((await errorOf(p.invoke(GET_NODES, { node: 'plain-node' }))).message).toContain(
      'Node plain-node does not run a kubevm agent (it has no kubevm.dev/node=true label)',
    );
    expect((await p.invoke(GET_NODES, {})).value.nodes).toHaveLength(2);
    expect((await c.request('DELETE', '/api/v1/nodes/plain-node')).status).toBe(200);
    const bad = await p.invoke(GET_NODES, { node: 'Node_0', colour: 'red' });
    expect(bad.value).toBeUndefined();
    expect(bad.failures).toEqual([
      { property: 'colour', reason: 'colour: unknown argument of kubevm:index:getNodeCapabilities (known: node)' },
      {
        property: 'node',
        reason: `node: value "Node_0" must be a DNS subdomain (DNS labels joined by '.', at most 253 characters)`,
      },
    ]);
  });
});

describe('getVirtualMachine', () => {
  let made: Awaited<ReturnType<typeof up>>;

  beforeAll(async () => {
    await up(VOL, 'root-look', { name: 'root-look', size: '16Mi' });
    made = await up(VM, 'look', {
      name: 'look',
      backend: 'sim',
      memory: '96Mi',
      labels: { app: 'look' },
      disks: [{ name: 'root', volume: 'root-look' }],
      cloudInit: { userData: secret(USER_DATA) },
    });
  }, 60_000);

  test('returns what Read returns: inputs as written, status outputs, cloudInit still a secret', async () => {
    const { value, failures } = await p.invoke(GET_VM, { name: 'look' });
    expect(failures).toEqual([]);
    expect(value).toMatchObject({
      name: 'look',
      namespace: 'default',
      memory: '96Mi',
      labels: { app: 'look' },
      printableStatus: 'Running',
      ready: true,
    });
    expect(value.node).toMatch(/^node-[01]$/);
    expect(value.uid).toBe(made.props.uid);
    expect(value.cloudInit[SIG_KEY]).toBe(SECRET_SIG);
    expect(value.cloudInit.value.userData).toBe(USER_DATA);
    expect(value.machine).toBeUndefined(); // a server default the program did not write
    const read = await p.read(VM, 'look', 'default/look');
    expect(value).toEqual(read.props);
    // With the namespace spelled out: the same.
    expect((await p.invoke(GET_VM, { name: 'look', namespace: 'default' })).value).toEqual(value);
  });

  test('a VM that is not there names namespace and name; a missing name is a failure; unknown functions are errors', async () => {
    expect((await errorOf(p.invoke(GET_VM, { name: 'nope' }))).message).toContain('VirtualMachine default/nope not found');
    expect((await errorOf(p.invoke(GET_VM, { name: 'look', namespace: 'elsewhere' }))).message).toContain(
      'VirtualMachine elsewhere/look not found',
    );
    expect(await p.invoke(GET_VM, {})).toEqual({ value: undefined, failures: [{ property: 'name', reason: 'name: required' }] });
    expect((await p.invoke(GET_VM, { name: 42 })).failures).toEqual([
      { property: 'name', reason: 'name: value 42 must be a string' },
    ]);
    const unknown = await errorOf(p.invoke('kubevm:index:getNothing', {}));
    expect(unknown.message).toContain(
      'unknown function kubevm:index:getNothing (kubevm offers kubevm:index:getVirtualMachine, kubevm:index:getNodeCapabilities, kubevm:index:listBackups)',
    );
  });
});

describe('VM waits fail fast when the scheduler cannot place the VM', () => {
  test('a capability no node offers: create fails at once with the scheduler message, not at the timeout', async () => {
    const { inputs } = await p.check(VM, 'needs-fs', {
      name: 'needs-fs',
      backend: 'sim',
      memory: '64Mi',
      filesystems: [{ name: 'share', containerPath: { path: '/srv' } }],
    });
    const err = await errorOf(p.create(VM, 'needs-fs', inputs, { timeout: 600 }));
    expect(err.message).toContain(
      'VirtualMachine default/needs-fs to be ready failed: the VM cannot be scheduled (Unschedulable): 0/2 nodes are available:',
    );
    expect(err.message).toContain('node-0: backend "sim" lacks capability "filesystem" needed by spec.filesystems[0]');
    expect(err.message).not.toContain('timed out');
    expect(err.message).toContain('printableStatus=ErrorUnschedulable');
    expect(err.metadata.get('grpc-status-details-bin').length).toBe(1); // the VM exists: the engine records it
    await p.del(VM, 'needs-fs', 'default/needs-fs', {});
  });

  test('memory no node has', async () => {
    const { inputs } = await p.check(VM, 'huge', { name: 'huge', backend: 'sim', memory: '64Gi' });
    const err = await errorOf(p.create(VM, 'huge', inputs, { timeout: 600 }));
    expect(err.message).toContain(
      'the VM cannot be scheduled (Unschedulable): 0/2 nodes are available: node-0: insufficient memory; node-1: insufficient memory',
    );
    await p.del(VM, 'huge', 'default/huge', {});
  });

  test('a restart under updatePolicy Restart into memory no node has fails at once too', async () => {
    const made = await up(VM, 'grow', { name: 'grow', backend: 'sim', memory: '64Mi', updatePolicy: 'Restart' });
    expect(made.props.ready).toBe(true);
    const err = await errorOf(p.update(VM, 'grow', made.id, made.props, { ...made.inputs, memory: '64Gi' }, { timeout: 600 }));
    expect(err.message).toContain(
      'VirtualMachine default/grow to restart with a new ready instance failed: the VM cannot be scheduled (Unschedulable)',
    );
    expect(err.message).toContain('insufficient memory');
    // Fixing the memory lets the same VM start again.
    const fixed = await p.update(VM, 'grow', made.id, made.props, { ...made.inputs, memory: '80Mi' }, { timeout: 60 });
    expect(fixed).toMatchObject({ ready: true, memory: '80Mi' });
    await p.del(VM, 'grow', made.id, fixed);
  });
});

describe('through the local engine', () => {
  let dir: string;
  let lines: string[];
  let opts: EngineOptions;

  beforeAll(() => {
    dir = tempDir();
    fs.writeFileSync(path.join(dir, 'Pulumi.yaml'), 'name: lookups\nruntime: nodejs\n');
    fs.writeFileSync(
      path.join(dir, 'index.ts'),
      `import * as pulumi from '@pulumi/pulumi';
import * as kubevm from '@kubevm/pulumi';

const config = new pulumi.Config();
const name = config.require('vm');

export = async () => {
  const nodes = await kubevm.getNodeCapabilities();
  const vm = await kubevm.getVirtualMachine({ name });
  console.log('lookup ' + JSON.stringify({ memory: vm.memory, status: vm.printableStatus, node: vm.node, nodes: nodes.nodes.map((n) => n.name + ':' + n.backends.join('+')) }));
  // Looked-up values feed a resource; the output form keeps the VM's secrets secret.
  new kubevm.Network('from-lookup', { name: 'from-lookup', type: 'pod', labels: { node: vm.node, memory: vm.memory } });
  const out = kubevm.getVirtualMachineOutput({ name });
  new kubevm.Network('from-secret', { name: 'from-secret', type: 'pod', labels: out.apply((v) => ({ hasUserData: v.cloudInit?.userData ? 'yes' : 'no' })) });
};
`,
    );
    lines = [];
    opts = {
      programDir: dir,
      statePath: path.join(dir, 'state.json'),
      kubeconfig: c.kubeconfigPath,
      config: { vm: 'look' },
      out: (l) => lines.push(l),
    };
  });

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('preview runs the lookups for real and changes nothing', async () => {
    const r = await runEngine('preview', opts);
    expect(r.errors).toEqual([]);
    const lookup = lines.find((l) => l.includes('lookup {'));
    expect(lookup).toBeDefined();
    const got = JSON.parse(lookup!.slice(lookup!.indexOf('{')));
    expect(got).toMatchObject({ memory: '96Mi', status: 'Running', nodes: ['node-0:sim', 'node-1:sim'] });
    expect(r.steps.map((s) => `${s.op} ${s.name}`).sort()).toEqual(['create from-lookup', 'create from-secret']);
    expect((await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/networks/from-lookup')).status).toBe(404);
  }, 120_000);

  test('up: looked-up values reach the cluster; a secret-derived value stays encrypted in the state', async () => {
    const r = await runEngine('up', opts);
    expect(r.errors).toEqual([]);
    const vm = (await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines/look')).json;
    const net = (await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/networks/from-lookup')).json;
    expect(net.metadata.labels).toEqual({ node: vm.status.node, memory: '96Mi' });
    expect(
      (await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/networks/from-secret')).json.metadata.labels,
    ).toEqual({ hasUserData: 'yes' });
    const state = JSON.parse(fs.readFileSync(opts.statePath!, 'utf8'));
    const secretNet = state.resources.find((x: any) => x.urn.endsWith('::from-secret'));
    expect(isSecret(secretNet.inputs.labels) || secretNet.inputs.labels?.ciphertext !== undefined).toBe(true);
    expect(fs.readFileSync(opts.statePath!, 'utf8')).not.toContain('invoke-secret-hunter2');
  }, 120_000);

  test('a lookup of a VM that is not there fails the run with the VM named', async () => {
    const r = await runEngine('preview', { ...opts, config: { vm: 'ghost' } });
    expect(r.ok).toBe(false);
    expect([...r.errors, ...lines].join('\n')).toContain('VirtualMachine default/ghost not found');
    const d = await runEngine('destroy', opts);
    expect(d.errors).toEqual([]);
  }, 120_000);
});

test('secrets never reach the plugin logs in plain text', () => {
  const all = p.stderr() + p.logs.map((l) => l.message).join('\n');
  expect(all).not.toContain('hunter2');
});
