import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { SimBackend } from '../../controller/hal';

/**
 * The controller and two node agents on the sim backend (no processes; the
 * same HAL contract as qemu), driven through the real API server: run
 * strategies, restarts, live changes, agent restart with adoption, volume
 * protection. The qemu backend gets the same treatment in the e2e suite.
 */
let c: TestCluster;
let rt: Runtime;
const ns = 'default';

const vmPath = (n: string) => `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines/${n}`;
const vmiPath = (n: string) => `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachineinstances/${n}`;
const get = async (p: string) => (await c.request('GET', p)).json;
const merge = (p: string, body: any) => c.request('PATCH', p, body, { 'Content-Type': 'application/merge-patch+json' });

function vm(name: string, spec: any = {}): any {
  return {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'VirtualMachine',
    metadata: { name },
    spec: { backend: 'sim', memory: '64Mi', interfaces: [{ name: 'eth0', network: 'default' }], disks: [{ name: 'root', volume: 'root-' + name }], ...spec },
  };
}

async function volume(name: string): Promise<void> {
  const r = await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes`, {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'Volume',
    metadata: { name },
    spec: { size: '16Mi', format: 'qcow2', source: { blank: {} } },
  });
  expect(r.status).toBe(201);
}

async function printable(name: string, want: string, timeoutMs = 15_000): Promise<any> {
  return eventually(async () => {
    const v = await get(vmPath(name));
    return v.status?.printableStatus === want ? v : undefined;
  }, timeoutMs, `${name} to be ${want}`);
}

function simFor(node: string): SimBackend {
  return rt.agents.find((a) => a.nodeName === node)!['opts'].backend as SimBackend;
}

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir: c.dataDir,
    nodes: 2,
    backend: 'sim',
    sim: {
      delays: { startMs: 30, guestReadyMs: 100, stopMs: 30, jitter: 0 },
      failStart: (spec) => (spec.name.startsWith('crash') ? 'simulated start failure' : undefined),
    },
  });
  const net = await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/networks`, {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'Network',
    metadata: { name: 'default' },
    spec: { type: 'pod' },
  });
  expect(net.status).toBe(201);
}, 60_000);

afterAll(async () => {
  await rt?.stop();
  await c?.cleanup();
});

test('nodes register with capacity, backend and capabilities, and heartbeat with a Lease', async () => {
  const nodes = await eventually(async () => {
    const l = (await get('/api/v1/nodes')).items;
    return l.length === 2 ? l : undefined;
  });
  for (const n of nodes) {
    expect(n.metadata.annotations['kubevm.dev/backends']).toBe('sim');
    expect(n.metadata.annotations['kubevm.dev/capabilities']).toContain('hotplug-disk');
    expect(n.status.conditions.find((x: any) => x.type === 'Ready').status).toBe('True');
    expect(Number(n.status.allocatable.cpu)).toBeGreaterThan(0);
  }
  const lease = await get('/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node-0');
  expect(lease.spec.holderIdentity).toBe('node-0');
  const table = await c.kubectl(['get', 'nodes']);
  expect(table.stdout).toMatch(/node-0\s+Ready/);
});

test('Always: a VM with a Volume and a Network runs, becomes Ready, shows in kubectl', async () => {
  await volume('root-a');
  const vol = await eventually(async () => {
    const v = await get(`/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/root-a`);
    return v.status?.phase === 'Ready' ? v : undefined;
  }, 20_000, 'volume Ready');
  expect(vol.status.path).toMatch(/\.qcow2$/);
  expect(vol.status.virtualSize).toBe(16 * 1024 * 1024);
  expect((await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines`, vm('a'))).status).toBe(201);
  const running = await printable('a', 'Running');
  await eventually(async () => (await get(vmPath('a'))).status.ready === true, 10_000, 'ready');
  expect(running.status.node).toBe(vol.status.nodeName); // placed where its disk is
  const vmi = await get(vmiPath('a'));
  expect(vmi.status.phase).toBe('Running');
  expect(vmi.metadata.ownerReferences[0].uid).toBe(running.metadata.uid);
  const table = await c.kubectl(['get', 'vm', 'a']);
  expect(table.stdout.split('\n')[0].split(/\s+/)).toEqual(['NAME', 'AGE', 'STATUS', 'READY', 'NODE', 'IP']);
  expect(table.stdout).toMatch(/a\s+\S+\s+Running\s+True\s+node-\d/);
});

test('Halted stops the VM and removes its instance; Always starts it again', async () => {
  await merge(vmPath('a'), { spec: { runStrategy: 'Halted' } });
  await printable('a', 'Stopped');
  await eventually(async () => (await c.request('GET', vmiPath('a'))).status === 404, 10_000, 'instance gone');
  await merge(vmPath('a'), { spec: { runStrategy: 'Always' } });
  await printable('a', 'Running');
});

test('Manual is started and stopped only by request', async () => {
  await volume('root-m');
  await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines`, vm('m', { runStrategy: 'Manual' }));
  await new Promise((r) => setTimeout(r, 1500));
  expect((await c.request('GET', vmiPath('m'))).status).toBe(404);
  await merge(vmPath('m'), { metadata: { annotations: { 'kubevm.dev/request': 'start' } } });
  await printable('m', 'Running');
  await eventually(async () => !(await get(vmPath('m'))).metadata.annotations?.['kubevm.dev/request'], 5000, 'request cleared');
  await merge(vmPath('m'), { metadata: { annotations: { 'kubevm.dev/request': 'stop' } } });
  await printable('m', 'Stopped');
});

test('Always replaces a crashed instance; Once does not', async () => {
  const vmi = await get(vmiPath('a'));
  simFor(vmi.spec.nodeName).crash(vmi.metadata.uid); // as kill -9 of QEMU from outside
  await eventually(async () => {
    const next = await get(vmiPath('a'));
    return next.metadata?.uid && next.metadata.uid !== vmi.metadata.uid && next.status?.phase === 'Running';
  }, 15_000, 'a new instance');
  const after = await printable('a', 'Running');
  expect(after.status.instanceUID).not.toBe(vmi.metadata.uid);

  await volume('root-o');
  await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines`, vm('o', { runStrategy: 'Once' }));
  await printable('o', 'Running');
  const once = await get(vmiPath('o'));
  simFor(once.spec.nodeName).crash(once.metadata.uid);
  await printable('o', 'Stopped');
  await new Promise((r) => setTimeout(r, 1000));
  expect((await get(vmiPath('o'))).metadata.uid).toBe(once.metadata.uid); // the failed instance stays, nothing new
  expect((await get(vmPath('o'))).status.conditions.find((x: any) => x.type === 'Failure')?.status).toBe('True');
});

test('a restart-class change sets RestartRequired and keeps the VM running; updatePolicy Restart restarts it', async () => {
  const before = await get(vmiPath('a'));
  await merge(vmPath('a'), { spec: { memory: '96Mi' } });
  const vm1 = await eventually(async () => {
    const v = await get(vmPath('a'));
    return v.status.conditions?.find((x: any) => x.type === 'RestartRequired')?.status === 'True' ? v : undefined;
  }, 10_000, 'RestartRequired');
  expect(vm1.status.restartRequiredFields).toEqual(['spec.memory']);
  expect((await get(vmiPath('a'))).metadata.uid).toBe(before.metadata.uid);
  await merge(vmPath('a'), { spec: { updatePolicy: 'Restart' } });
  await eventually(async () => {
    const i = await get(vmiPath('a'));
    return i.metadata?.uid && i.metadata.uid !== before.metadata.uid && i.spec.memory === '96Mi' && i.status?.phase === 'Running';
  }, 15_000, 'restarted instance with the new memory');
  await eventually(async () => !(await get(vmPath('a'))).status.conditions?.some((x: any) => x.type === 'RestartRequired'), 10_000, 'RestartRequired cleared');
});

test('adding a disk is applied live: same instance, the backend attached it', async () => {
  await volume('data-a');
  await eventually(async () => (await get(`/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/data-a`)).status?.phase === 'Ready', 20_000, 'data volume');
  const before = await get(vmiPath('a'));
  const disks = [...(await get(vmPath('a'))).spec.disks, { name: 'data', volume: 'data-a' }];
  await merge(vmPath('a'), { spec: { disks } });
  await eventually(async () => (await get(vmiPath('a'))).spec.disks?.some((d: any) => d.name === 'data'), 10_000, 'disk passed to the instance');
  const sim = simFor(before.spec.nodeName);
  await eventually(() => (sim.world.vms.get(before.metadata.uid) as any)?.spec.disks.some((d: any) => d.name === 'data'), 10_000, 'disk attached by the backend');
  expect((await get(vmiPath('a'))).metadata.uid).toBe(before.metadata.uid);
  expect((await get(vmPath('a'))).status.conditions?.some((x: any) => x.type === 'RestartRequired')).toBe(false);
});

test('an agent restart adopts running VMs: same instance, still Running', async () => {
  const before = await get(vmiPath('a'));
  await rt.restartAgent(before.spec.nodeName);
  await new Promise((r) => setTimeout(r, 1000));
  const after = await get(vmiPath('a'));
  expect(after.metadata.uid).toBe(before.metadata.uid);
  expect(after.status.phase).toBe('Running');
  expect((await get(vmPath('a'))).status.printableStatus).toBe('Running');
});

test('a Volume in use cannot be deleted until its VM is gone; deleting a VM removes its instance', async () => {
  const del = await c.request('DELETE', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/root-m`);
  expect(del.status).toBe(200);
  await new Promise((r) => setTimeout(r, 1000));
  const held = await get(`/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/root-m`);
  expect(held.metadata.deletionTimestamp).toBeDefined();
  expect(held.status.usedBy).toEqual(['m']);
  const events = (await get(`/api/v1/namespaces/${ns}/events?fieldSelector=involvedObject.name=root-m`)).items;
  expect(events.some((e: any) => e.reason === 'VolumeInUse')).toBe(true);
  expect((await c.request('DELETE', vmPath('m'))).status).toBe(200);
  await eventually(async () => (await c.request('GET', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/root-m`)).status === 404, 15_000, 'volume deleted');
  await eventually(async () => (await c.request('GET', vmPath('m'))).status === 404, 15_000, 'vm deleted');
});

test('a spec no node\'s backend can run is unschedulable, naming backend, capability and field; the agent refuses it too', async () => {
  // Nodes whose backend lacks bridge networking (as a backend without root privileges would).
  for (const n of ['node-0', 'node-1']) {
    const node = await get(`/api/v1/nodes/${n}`);
    const caps = node.metadata.annotations['kubevm.dev/capabilities'].split(',').filter((x: string) => x !== 'network-bridge');
    await merge(`/api/v1/nodes/${n}`, { metadata: { annotations: { 'kubevm.dev/capabilities': caps.join(',') } } });
  }
  await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/networks`, { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Network', metadata: { name: 'br' }, spec: { type: 'bridge' } });
  await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines`, vm('b', { disks: [], interfaces: [{ name: 'eth0', network: 'br' }] }));
  await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines`, vm('tiny', { disks: [], interfaces: [], memory: '8Mi' }));
  const tiny = await printable('tiny', 'ErrorUnschedulable');
  expect(tiny.status.conditions.find((x: any) => x.type === 'Failure').message).toBe('spec.memory: "8Mi" is below the minimum of 16Mi');
  const b = await printable('b', 'ErrorUnschedulable');
  const failure = b.status.conditions.find((x: any) => x.type === 'Failure');
  expect(failure.message).toContain('backend "sim" lacks capability "network-bridge" needed by spec.interfaces[0].network');
  expect((await c.request('GET', vmiPath('b'))).status).toBe(404);

  // The agent checks again against its backend: an instance placed by hand on a node that cannot run it fails.
  const sim = rt.agents[0]['opts'].backend as SimBackend;
  const caps = sim.capabilities();
  (sim as any).caps = caps.filter((x) => x !== 'network-bridge');
  try {
    const r = await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachineinstances`, {
      apiVersion: 'kubevm.dev/v1alpha1',
      kind: 'VirtualMachineInstance',
      metadata: { name: 'by-hand' },
      spec: { backend: 'sim', nodeName: 'node-0', interfaces: [{ name: 'eth0', network: 'br' }], networks: [{ name: 'br', type: 'bridge', bridge: 'kvbtest' }] },
    });
    expect(r.status).toBe(201);
    const vmi = await eventually(async () => {
      const i = await get(vmiPath('by-hand'));
      return i.status?.phase === 'Failed' ? i : undefined;
    }, 10_000, 'hand-placed instance to fail');
    expect(vmi.status.reason).toBe('Unsupported');
    expect(vmi.status.message).toContain('backend "sim" lacks capability "network-bridge"');
  } finally {
    (sim as any).caps = caps;
  }
});

test('RerunOnFailure: a crash gets a new instance; a guest power-off does not', async () => {
  await volume('root-r');
  await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines`, vm('r', { runStrategy: 'RerunOnFailure' }));
  await printable('r', 'Running');
  const first = await get(vmiPath('r'));
  simFor(first.spec.nodeName).crash(first.metadata.uid);
  const second = await eventually(async () => {
    const i = await get(vmiPath('r'));
    return i.metadata?.uid && i.metadata.uid !== first.metadata.uid && i.status?.phase === 'Running' ? i : undefined;
  }, 15_000, 'a new instance after the crash');
  // The guest powers itself off (the backend reports Succeeded without the agent asking).
  await simFor(second.spec.nodeName).stop(second.metadata.uid);
  await printable('r', 'Stopped');
  await new Promise((r) => setTimeout(r, 1000));
  const still = await get(vmiPath('r'));
  expect(still.metadata.uid).toBe(second.metadata.uid);
  expect(still.status.phase).toBe('Succeeded');
});

test('repeated start failures back off: CrashLoopBackOff with a growing retry time and the reason', async () => {
  await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines`, vm('crashy', { disks: [] }));
  const looping = await printable('crashy', 'CrashLoopBackOff', 20_000);
  expect(looping.status.startFailure.consecutiveFailCount).toBeGreaterThanOrEqual(2);
  const failure = looping.status.conditions.find((x: any) => x.type === 'Failure');
  expect(failure.reason).toBe('StartFailed');
  expect(failure.message).toContain('simulated start failure');
  const retryIn = Date.parse(looping.status.startFailure.retryAfter) - Date.parse(looping.status.startFailure.lastFailedAt);
  expect(retryIn).toBeGreaterThanOrEqual(5000);
  await c.request('DELETE', vmPath('crashy'));
});

test('Volumes: import from an image under the allowed roots, clone, and a refused path', async () => {
  const shared = path.join(c.dataDir, 'shared');
  const image = path.join(shared, 'base.qcow2');
  execFileSync('qemu-img', ['create', '-f', 'qcow2', image, '24M']);
  execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 64k', image]);
  const create = (name: string, spec: any) =>
    c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes`, { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Volume', metadata: { name }, spec });
  const phase = (name: string, want: string) =>
    eventually(async () => {
      const v = await get(`/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/${name}`);
      return v.status?.phase === want ? v : undefined;
    }, 20_000, `${name} ${want}`);
  expect((await create('imported', { format: 'qcow2', source: { image: { path: image } } })).status).toBe(201);
  const imported = await phase('imported', 'Ready');
  expect(imported.status.virtualSize).toBe(24 * 1024 * 1024);
  expect((await create('cloned', { format: 'raw', source: { clone: { volume: 'imported' } } })).status).toBe(201);
  const cloned = await phase('cloned', 'Ready');
  expect(cloned.status.nodeName).toBe(imported.status.nodeName); // a clone lives with its source
  const head = Buffer.alloc(4);
  const fd = fs.openSync(cloned.status.path, 'r');
  fs.readSync(fd, head, 0, 4, 0);
  fs.closeSync(fd);
  expect(head.toString('hex')).toBe('5a5a5a5a'); // the data came along, converted to raw
  expect((await create('outside', { source: { image: { path: '/etc/hostname' } } })).status).toBe(201);
  const refused = await phase('outside', 'Failed');
  expect(refused.status.message).toContain('outside the allowed roots');
});

test('cloud-init user data can come from a Secret', async () => {
  await c.request('POST', `/api/v1/namespaces/${ns}/secrets`, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'ud' },
    stringData: { userdata: '#!/bin/sh\necho from-secret\n' },
  });
  await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/virtualmachines`, vm('s', { disks: [], cloudInit: { userDataSecretRef: { name: 'ud' }, hostname: 'sec-host' } }));
  await printable('s', 'Running');
  const vmi = await get(vmiPath('s'));
  const spec = (simFor(vmi.spec.nodeName).world.vms.get(vmi.metadata.uid) as any).spec;
  expect(spec.cloudInit).toEqual({ hostname: 'sec-host', userData: '#!/bin/sh\necho from-secret\n' });
  // The Secret's content stays out of the VM and instance objects.
  expect(JSON.stringify(await get(vmPath('s')))).not.toContain('from-secret');
  expect(JSON.stringify(vmi)).not.toContain('from-secret');
});

test('a Volume that was never placed on a node can be deleted (no agent holds a file for it)', async () => {
  const r = await c.request('POST', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes`, {
    apiVersion: 'kubevm.dev/v1alpha1',
    kind: 'Volume',
    metadata: { name: 'orphan-clone' },
    spec: { format: 'qcow2', source: { clone: { volume: 'does-not-exist' } } },
  });
  expect(r.status).toBe(201);
  await eventually(async () => {
    const v = (await c.request('GET', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/orphan-clone`)).json;
    return (v.metadata.finalizers ?? []).includes('kubevm.dev/volume-storage') && v.status?.phase === 'Pending' ? v : undefined;
  }, 10_000, 'orphan-clone pending with finalizers');
  expect((await c.request('DELETE', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/orphan-clone`)).status).toBe(200);
  await eventually(async () => ((await c.request('GET', `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes/orphan-clone`)).status === 404 ? true : undefined), 10_000, 'orphan-clone gone');
});

test('deleting a raw Volume also removes its change-tracking overlay', async () => {
  const base = `/apis/kubevm.dev/v1alpha1/namespaces/${ns}/volumes`;
  expect((await c.request('POST', base, { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Volume', metadata: { name: 'raw-cbt' }, spec: { size: '4Mi', format: 'raw', source: { blank: {} } } })).status).toBe(201);
  const v = await eventually(async () => {
    const x = (await c.request('GET', `${base}/raw-cbt`)).json;
    return x.status?.phase === 'Ready' ? x : undefined;
  }, 10_000, 'raw-cbt Ready');
  const overlay = `${v.status.path}.cbt.qcow2`; // what the qemu backend makes for a tracked raw disk
  fs.writeFileSync(overlay, 'overlay');
  expect((await c.request('DELETE', `${base}/raw-cbt`)).status).toBe(200);
  await eventually(async () => ((await c.request('GET', `${base}/raw-cbt`)).status === 404 ? true : undefined), 10_000, 'raw-cbt gone');
  expect(fs.existsSync(v.status.path)).toBe(false);
  expect(fs.existsSync(overlay)).toBe(false);
});
