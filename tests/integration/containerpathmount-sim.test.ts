import * as fs from 'node:fs';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { Agent } from '../../controller/agent/agent';
import { createBackend, SimBackend, SimWorld } from '../../controller/hal';
import { SIM_CAPABILITIES } from '../../controller/hal/sim/backend';

/**
 * ContainerPathMounts through the real API server, controller and node agents
 * on the sim backend: the controller merges a mount into the VM's instance,
 * the agent shares it with the running guest (the sim world records what the
 * backend really did), and the mount's status follows what happened. A second
 * node runs a backend without `hotplug-filesystem` for the restart-class path.
 * The sim backend cannot unplug a share, so detaching waits for a restart.
 */
let c: TestCluster;
let rt: Runtime;
let noHot: Agent;
let shared: string;
const ns = 'default';
const api = `/apis/kubevm.dev/v1alpha1/namespaces/${ns}`;
const get = async (p: string) => (await c.request('GET', p)).json;
const merge = (p: string, body: any) => c.request('PATCH', p, body, { 'Content-Type': 'application/merge-patch+json' });
const condition = (o: any, type: string) => (o?.status?.conditions ?? []).find((x: any) => x.type === type);

async function createVm(name: string, spec: any = {}, node = 'node-0'): Promise<void> {
  const body = {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name },
    spec: { backend: 'sim', memory: '64Mi', nodeSelector: { 'kubernetes.io/hostname': node }, ...spec },
  };
  const r = await c.request('POST', `${api}/virtualmachines`, body);
  expect(r.status).toBe(201);
}

async function createMount(name: string, spec: any): Promise<any> {
  return c.request('POST', `${api}/containerpathmounts`, {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'ContainerPathMount',
    metadata: { name },
    spec,
  });
}

async function mountIn(name: string, phase: string, reason?: string, timeoutMs = 15_000): Promise<any> {
  return eventually(
    async () => {
      const m = await get(`${api}/containerpathmounts/${name}`);
      return m.status?.phase === phase &&
        (!reason || m.status.reason === reason) &&
        m.status.observedGeneration === m.metadata.generation
        ? m
        : undefined;
    },
    timeoutMs,
    `mount ${name} to be ${phase}${reason ? ` (${reason})` : ''}`,
  );
}

async function running(name: string): Promise<any> {
  return eventually(
    async () => {
      const v = await get(`${api}/virtualmachines/${name}`);
      if (v.status?.printableStatus === 'Running' && v.status.ready) return v;
      throw new Error(`status ${JSON.stringify(v.status)}`);
    },
    15_000,
    `${name} Running`,
  );
}

function simOf(node: string): SimBackend {
  if (node === 'node-nohot') return noHot['opts'].backend as SimBackend;
  return rt.agents.find((a) => a.nodeName === node)!['opts'].backend as SimBackend;
}

/** The shares the sim backend really holds for an instance. */
function sharesOf(vmi: any): { tag: string; hostPath: string }[] {
  const vm = simOf(vmi.spec.nodeName).world.vms.get(vmi.metadata.uid);
  return (vm?.spec.filesystems ?? []).map((f) => ({ tag: f.tag, hostPath: f.hostPath }));
}

beforeAll(async () => {
  c = await startTestCluster();
  shared = path.join(c.dataDir, 'shared');
  const delays = { startMs: 20, guestReadyMs: 50, stopMs: 20, jitter: 0 };
  const nodeCapacity = { cpu: 64, memoryBytes: 64 * 1024 ** 3 };
  rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir: c.dataDir,
    nodes: 1,
    backend: 'sim',
    sim: { delays },
    nodeCapacity,
  });
  for (const d of ['a', 'b', 'own', 'later']) fs.mkdirSync(path.join(shared, d), { recursive: true });
  // A node whose backend can share directories at start but not add them to a running VM.
  const backend = createBackend('sim', {
    delays,
    world: new SimWorld(),
    allowedRoots: [shared],
    capabilities: SIM_CAPABILITIES.filter((x) => x !== 'hotplug-filesystem'),
  });
  noHot = new Agent(rt.kube, {
    nodeName: 'node-nohot',
    backend,
    volumeDir: path.join(c.dataDir, 'nodes', 'node-nohot', 'volumes'),
    allowedRoots: [shared],
    cpu: nodeCapacity.cpu,
    memoryBytes: nodeCapacity.memoryBytes,
  });
  await noHot.start();
}, 60_000);

afterAll(async () => {
  await noHot?.stop();
  await rt?.stop();
  await c?.cleanup();
});

test('a mount on a running VM: merged into the instance, hot-added by the agent, Attached with node and instance', async () => {
  await createVm('run1');
  await running('run1');
  const vmi = await get(`${api}/virtualmachineinstances/run1`);
  expect(sharesOf(vmi)).toEqual([]);
  expect((await createMount('m1', { vm: 'run1', path: path.join(shared, 'a'), tag: 'data' })).status).toBe(201);
  const m = await mountIn('m1', 'Attached');
  expect(m.status).toMatchObject({ reason: 'Attached', node: 'node-0', instanceUID: vmi.metadata.uid });
  expect(condition(m, 'Attached').status).toBe('True');
  expect(m.spec.readOnly).toBe(true); // the server's default
  // What really happened: the backend of the same instance holds the share.
  expect(sharesOf(vmi)).toEqual([{ tag: 'data', hostPath: path.join(shared, 'a') }]);
  const after = await get(`${api}/virtualmachineinstances/run1`);
  expect(after.metadata.uid).toBe(vmi.metadata.uid);
  expect(after.spec.filesystems).toEqual([
    { name: 'data', containerPath: { path: path.join(shared, 'a'), readOnly: true }, mount: 'm1' },
  ]);
  expect(after.status.filesystems).toEqual([{ name: 'data', mount: 'm1', path: path.join(shared, 'a'), phase: 'Attached' }]);
  // The VM's own spec is untouched and nothing waits for a restart.
  const v = await get(`${api}/virtualmachines/run1`);
  expect(v.spec.filesystems).toBeUndefined();
  expect(condition(v, 'RestartRequired')).toBeUndefined();
  const table = await c.kubectl(['get', 'cpm', 'm1', '--no-headers']);
  expect(table.stdout).toMatch(/^m1\s+run1\s+data\s+Attached\s+node-0/);
});

test('a mount of a stopped VM is Pending until the VM starts, then it is shared at start', async () => {
  await createVm('stopped1', { runStrategy: 'Halted' });
  await createMount('m2', { vm: 'stopped1', path: path.join(shared, 'b'), tag: 'b' });
  const pending = await mountIn('m2', 'Pending', 'VMNotRunning');
  expect(pending.status.message).toContain('attached at its next start');
  await merge(`${api}/virtualmachines/stopped1`, { spec: { runStrategy: 'Always' } });
  await running('stopped1');
  const m = await mountIn('m2', 'Attached');
  const vmi = await get(`${api}/virtualmachineinstances/stopped1`);
  expect(m.status.instanceUID).toBe(vmi.metadata.uid);
  expect(sharesOf(vmi)).toEqual([{ tag: 'b', hostPath: path.join(shared, 'b') }]);
});

test('a mount of a VM that does not exist is Pending (VMNotFound); bad input is refused by the API server', async () => {
  await createMount('m-orphan', { vm: 'nobody', path: path.join(shared, 'a'), tag: 'x' });
  expect((await mountIn('m-orphan', 'Pending', 'VMNotFound')).status.message).toContain('VirtualMachine nobody not found');
  const climb = await createMount('m-climb', { vm: 'run1', path: `${shared}/a/../../etc`, tag: 'x' });
  expect(climb.status).toBe(422);
  expect(climb.json.details.causes[0].field).toBe('spec.path');
  const tag = await createMount('m-tag', { vm: 'run1', path: `${shared}/a`, tag: 'a'.repeat(32) });
  expect(tag.status).toBe(422);
  expect(JSON.stringify(tag.json.details.causes)).toContain('spec.tag');
  const rw = await createMount('m-rw', { vm: 'run1', path: `${shared}/a`, tag: 'rw', readOnly: false });
  expect(rw.status).toBe(422);
  await c.request('DELETE', `${api}/containerpathmounts/m-orphan`);
});

test('a path outside the allowed roots fails the mount with the reason; the VM keeps running without it', async () => {
  await createMount('m-etc', { vm: 'run1', path: '/etc', tag: 'etc' });
  const m = await mountIn('m-etc', 'Failed', 'AttachFailed');
  expect(m.status.message).toContain('ContainerPathMount m-etc: spec.path');
  expect(m.status.message).toContain('outside the allowed roots');
  const vmi = await get(`${api}/virtualmachineinstances/run1`);
  expect(sharesOf(vmi).map((s) => s.tag)).toEqual(['data']);
  expect((await get(`${api}/virtualmachines/run1`)).status.printableStatus).toBe('Running');
  await c.request('DELETE', `${api}/containerpathmounts/m-etc`);
});

test("tag collisions: with the VM's own filesystem, and between mounts (the older one wins)", async () => {
  await createVm('own1', { filesystems: [{ name: 'web', containerPath: { path: path.join(shared, 'own') } }] });
  await running('own1');
  await createMount('m-own', { vm: 'own1', path: path.join(shared, 'a'), tag: 'web' });
  const clash = await mountIn('m-own', 'Failed', 'TagConflict');
  expect(clash.status.message).toBe(
    "tag web is already used by the VM's own filesystem web of VirtualMachine own1; choose another tag",
  );
  // Second mount with the tag of an existing mount (m1 on run1, tag data).
  await createMount('m1-twin', { vm: 'run1', path: path.join(shared, 'b'), tag: 'data' });
  const twin = await mountIn('m1-twin', 'Failed', 'TagConflict');
  expect(twin.status.message).toContain('tag data is already used by ContainerPathMount m1');
  expect((await get(`${api}/containerpathmounts/m1`)).status.phase).toBe('Attached');
  const vmi = await get(`${api}/virtualmachineinstances/own1`);
  expect(sharesOf(vmi)).toEqual([{ tag: 'web', hostPath: path.join(shared, 'own') }]);
  await c.request('DELETE', `${api}/containerpathmounts/m-own`);
});

test('deleting a mount the backend cannot unplug: the share stays until the next start, the VM says so; a restart detaches it', async () => {
  // m1 (tag data, dir a) is attached to run1; m1-twin (tag data, dir b) waits behind it.
  const vmi = await get(`${api}/virtualmachineinstances/run1`);
  expect((await c.request('DELETE', `${api}/containerpathmounts/m1`)).status).toBe(200);
  const vm = await eventually(
    async () => {
      const v = await get(`${api}/virtualmachines/run1`);
      return condition(v, 'RestartRequired')?.status === 'True' ? v : undefined;
    },
    10_000,
    'RestartRequired on run1',
  );
  expect(vm.status.restartRequiredFields).toEqual(['spec.filesystems']);
  // The twin now owns tag data in the spec, but the old share still holds the tag in the running guest.
  const st = await eventually(
    async () => {
      const f = (await get(`${api}/virtualmachineinstances/run1`)).status.filesystems;
      return f?.[0]?.mount === 'm1-twin' ? f : undefined;
    },
    10_000,
    'the twin in the instance status',
  );
  expect(st).toEqual([expect.objectContaining({ name: 'data', mount: 'm1-twin', phase: 'Pending' })]);
  expect(st[0].message).toContain(`still held by the removed share of ${path.join(shared, 'a')}`);
  const twin = await mountIn('m1-twin', 'Pending', 'AttachAtNextStart');
  expect(condition(twin, 'RestartRequired').status).toBe('True');
  expect(sharesOf(vmi)).toEqual([{ tag: 'data', hostPath: path.join(shared, 'a') }]); // really still shared
  // A restart (the user's request here; updatePolicy Restart would do it itself) brings the spec in.
  await merge(`${api}/virtualmachines/run1`, { metadata: { annotations: { 'kubevm.dev/request': 'restart' } } });
  const m = await mountIn('m1-twin', 'Attached', undefined, 20_000);
  expect(m.status.instanceUID).not.toBe(vmi.metadata.uid);
  expect(sharesOf(await get(`${api}/virtualmachineinstances/run1`))).toEqual([{ tag: 'data', hostPath: path.join(shared, 'b') }]);
  await eventually(
    async () => !condition(await get(`${api}/virtualmachines/run1`), 'RestartRequired'),
    10_000,
    'RestartRequired cleared',
  );
  // Deleting the last mount: DetachPending in the instance status.
  await c.request('DELETE', `${api}/containerpathmounts/m1-twin`);
  const pending = await eventually(
    async () => {
      const i = await get(`${api}/virtualmachineinstances/run1`);
      return i.status.filesystems?.[0]?.phase === 'DetachPending' ? i : undefined;
    },
    10_000,
    'DetachPending',
  );
  expect(pending.status.filesystems[0].message).toContain(
    'backend "sim" cannot remove a share from a running VM: it stays until the next start',
  );
  expect(pending.spec.filesystems).toBeUndefined();
});

test('a backend without hotplug-filesystem: the mount waits for the next start (restart-class); updatePolicy Restart restarts the VM', async () => {
  await createVm('nohot1', {}, 'node-nohot');
  await running('nohot1');
  const before = await get(`${api}/virtualmachineinstances/nohot1`);
  expect(before.spec.nodeName).toBe('node-nohot');
  await createMount('m-nohot', { vm: 'nohot1', path: path.join(shared, 'later'), tag: 'later' });
  const m = await mountIn('m-nohot', 'Pending', 'AttachAtNextStart');
  expect(m.status.message).toBe('backend "sim" lacks capability "hotplug-filesystem": shared at the next start');
  expect(condition(m, 'RestartRequired').status).toBe('True');
  const vm = await eventually(
    async () => {
      const v = await get(`${api}/virtualmachines/nohot1`);
      return condition(v, 'RestartRequired')?.status === 'True' ? v : undefined;
    },
    10_000,
    'RestartRequired on nohot1',
  );
  expect(vm.status.restartRequiredFields).toEqual(['spec.filesystems']);
  expect(sharesOf(before)).toEqual([]);
  await merge(`${api}/virtualmachines/nohot1`, { spec: { updatePolicy: 'Restart' } });
  const attached = await mountIn('m-nohot', 'Attached', undefined, 20_000);
  expect(attached.status.instanceUID).not.toBe(before.metadata.uid);
  expect(condition(attached, 'RestartRequired')).toBeUndefined();
  expect(sharesOf(await get(`${api}/virtualmachineinstances/nohot1`))).toEqual([
    { tag: 'later', hostPath: path.join(shared, 'later') },
  ]);
});

test('an agent restart keeps the report: the mount stays Attached, nothing is shared twice', async () => {
  const vmi = await get(`${api}/virtualmachineinstances/stopped1`);
  await rt.restartAgent('node-0');
  await merge(`${api}/virtualmachineinstances/stopped1`, { metadata: { labels: { poke: 'x' } } }); // makes the new agent reconcile it
  await new Promise((r) => setTimeout(r, 1000));
  const after = await get(`${api}/virtualmachineinstances/stopped1`);
  expect(after.metadata.uid).toBe(vmi.metadata.uid);
  expect(after.status.filesystems).toEqual([{ name: 'b', mount: 'm2', path: path.join(shared, 'b'), phase: 'Attached' }]);
  expect(sharesOf(after)).toEqual([{ tag: 'b', hostPath: path.join(shared, 'b') }]);
  expect((await get(`${api}/containerpathmounts/m2`)).status.phase).toBe('Attached');
});
