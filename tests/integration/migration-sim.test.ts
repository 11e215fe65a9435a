import { startTestCluster, TestCluster, eventually, kubevmApi } from '../helpers/cluster';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import { Kube } from '../../controller/runtime/kube';
import { drainNode } from '../../controller/drain';

/**
 * Live migration through the real API server, the controller and three node
 * agents on the sim backend (the qemu data path is in
 * tests/integration/hal-migration.test.ts and tests/e2e/migration-qemu.test.ts):
 * the Migration phases, the instance rebound to the target, refusal of a VM that
 * cannot migrate, cancellation, a backup and a migration never overlapping, and
 * `kubevm node drain`.
 */
let c: TestCluster;
let rt: Runtime;
let kube: Kube;
const ns = 'default';
const { api, get, post } = kubevmApi(() => c, ns);

async function vm(name: string, spec: any = {}): Promise<any> {
  await post('volumes', { kind: 'Volume', metadata: { name: `${name}-root` }, spec: { size: '16Mi', source: { blank: {} } } });
  await post('virtualmachines', {
    kind: 'VirtualMachine',
    metadata: { name },
    spec: { backend: 'sim', memory: '64Mi', disks: [{ name: 'root', volume: `${name}-root` }], ...spec },
  });
  return eventually(async () => {
    const v = await get(`${api}/virtualmachines/${name}`);
    return v.status?.printableStatus === 'Running' && v.status?.ready ? v : undefined;
  }, 20_000, `${name} running`).catch(async (e) => {
    throw new Error(`${e.message}: ${JSON.stringify((await get(`${api}/virtualmachines/${name}`)).status)}`);
  });
}

async function migration(name: string, spec: any): Promise<any> {
  await post('migrations', { kind: 'Migration', metadata: { name }, spec });
  return done(name);
}

async function done(name: string, timeoutMs = 20_000): Promise<any> {
  return eventually(async () => {
    const m = await get(`${api}/migrations/${name}`);
    return ['Succeeded', 'Failed'].includes(m.status?.phase) ? m : undefined;
  }, timeoutMs, `migration ${name} to end`);
}

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startSimRuntime(c, { nodes: 3, nodeCapacity: { cpu: 32, memoryBytes: 64 * 1024 ** 3 }, sim: { delays: { startMs: 20, guestReadyMs: 50, stopMs: 20, jitter: 0, migrateMs: 1500, backupMs: 1500 } } });
  kube = Kube.fromFile(c.kubeconfigPath);
}, 60_000);

afterAll(async () => {
  await rt?.stop();
  await c?.cleanup();
});

test('a running VM moves to another node: phases, rebound instance, same uid, downtime and bytes reported', async () => {
  const before = await vm('m1');
  const phases = new Set<string>();
  await post('migrations', { kind: 'Migration', metadata: { name: 'mig-1' }, spec: { vm: 'm1' } });
  const m = await eventually(async () => {
    const x = await get(`${api}/migrations/mig-1`);
    if (x.status?.phase) phases.add(x.status.phase);
    const v = await get(`${api}/virtualmachines/m1`);
    if (v.status?.printableStatus === 'Migrating') phases.add('vm:Migrating');
    return ['Succeeded', 'Failed'].includes(x.status?.phase) ? x : undefined;
  }, 20_000, 'mig-1');
  expect(m.status).toMatchObject({ phase: 'Succeeded', sourceNode: before.status.node, instanceUID: before.status.instanceUID });
  expect(m.status.targetNode).not.toBe(before.status.node);
  expect(m.status.downtimeMs).toBeGreaterThanOrEqual(0);
  expect(m.status.bytesTransferred).toBeGreaterThan(0);
  expect(phases.has('Running')).toBe(true);
  expect(phases.has('vm:Migrating')).toBe(true);
  const after = await eventually(async () => {
    const v = await get(`${api}/virtualmachines/m1`);
    return v.status?.node === m.status.targetNode && v.status?.ready && v.status.printableStatus === 'Running' ? v : undefined;
  }, 10_000, 'VM status names the new node');
  expect(after.status.instanceUID).toBe(before.status.instanceUID);
  const vmi = await get(`${api}/virtualmachineinstances/m1`);
  expect(vmi.spec.nodeName).toBe(m.status.targetNode);
  expect(vmi.status).toMatchObject({ phase: 'Running', nodeName: m.status.targetNode, migrationState: { completed: true, sourceNode: before.status.node } });
  // The source node runs nothing of it any more; the target does.
  const src = rt.agents.find((a) => a.nodeName === before.status.node)!['opts'].backend;
  const dst = rt.agents.find((a) => a.nodeName === m.status.targetNode)!['opts'].backend;
  expect(src.status(before.status.instanceUID)).toBeUndefined();
  expect(dst.status(before.status.instanceUID)?.phase).toBe('Running');
  // Stopping it afterwards is the target agent's job, and works.
  await c.request('PATCH', `${api}/virtualmachines/m1`, { spec: { runStrategy: 'Halted' } }, { 'Content-Type': 'application/merge-patch+json' });
  await eventually(async () => ((await get(`${api}/virtualmachines/m1`)).status?.printableStatus === 'Stopped' ? true : undefined), 15_000, 'm1 stopped');
  expect(dst.status(before.status.instanceUID)).toBeUndefined();
});

test('a VM that shares a host directory cannot migrate: Failed with the reason, still running where it was', async () => {
  const v = await vm('m2', { filesystems: [{ name: 'share', containerPath: { path: `${c.dataDir}/shared` } }] });
  const m = await migration('mig-2', { vm: 'm2' });
  expect(m.status).toMatchObject({ phase: 'Failed', reason: 'NotMigratable' });
  expect(m.status.message).toContain('shares a host directory');
  const again = await get(`${api}/virtualmachines/m2`);
  expect(again.status).toMatchObject({ printableStatus: 'Running', node: v.status.node, instanceUID: v.status.instanceUID });
});

test('bad Migrations fail naming the field', async () => {
  expect((await migration('mig-ghost', { vm: 'ghost' })).status.message).toContain('spec.vm: VirtualMachine default/ghost not found');
  const v = (await get(`${api}/virtualmachines/m2`)).status.node;
  expect((await migration('mig-self', { vm: 'm2', targetNode: v })).status.message).toContain(`spec.targetNode: the VM already runs on ${v}`);
  expect((await migration('mig-nonode', { vm: 'm2', targetNode: 'node-9' })).status.message).toContain('spec.targetNode: node node-9 does not exist');
});

test('deleting a running migration cancels it; the VM keeps running on the source', async () => {
  const v = await vm('m3');
  await post('migrations', { kind: 'Migration', metadata: { name: 'mig-3' }, spec: { vm: 'm3' } });
  await eventually(async () => ((await get(`${api}/migrations/mig-3`)).status?.phase === 'Running' ? true : undefined), 10_000, 'mig-3 running');
  expect((await c.request('DELETE', `${api}/migrations/mig-3`)).status).toBe(200);
  await eventually(async () => ((await c.request('GET', `${api}/migrations/mig-3`)).status === 404 ? true : undefined), 15_000, 'mig-3 gone');
  const after = await eventually(async () => {
    const x = await get(`${api}/virtualmachines/m3`);
    return x.status?.printableStatus === 'Running' ? x : undefined;
  }, 10_000, 'm3 running');
  expect(after.status).toMatchObject({ node: v.status.node, instanceUID: v.status.instanceUID });
  const vmi = await get(`${api}/virtualmachineinstances/m3`);
  expect(vmi.status.migrationState).toMatchObject({ failed: true });
  // No incoming instance was left behind on any other node.
  for (const a of rt.agents) if (a.nodeName !== v.status.node) expect(a['opts'].backend.status(v.status.instanceUID)).toBeUndefined();
});

test('a migration waits for a running backup of the same VM', async () => {
  await post('backups', { kind: 'Backup', metadata: { name: 'm3-b1' }, spec: { vm: 'm3', type: 'Full' } });
  await eventually(async () => ((await get(`${api}/backups/m3-b1`)).status?.phase === 'Running' ? true : undefined), 10_000, 'backup running');
  await post('migrations', { kind: 'Migration', metadata: { name: 'mig-4' }, spec: { vm: 'm3' } });
  const waiting = await eventually(async () => {
    const m = await get(`${api}/migrations/mig-4`);
    return m.status?.reason === 'BackupInProgress' ? m : undefined;
  }, 10_000, 'mig-4 waits');
  expect(waiting.status.phase).toBe('Pending');
  expect(waiting.status.message).toContain('Backup m3-b1');
  const m = await done('mig-4');
  expect(m.status.phase).toBe('Succeeded');
  const b = await get(`${api}/backups/m3-b1`);
  expect(b.status.phase).toBe('Succeeded');
  expect(Date.parse(b.status.completionTime)).toBeLessThanOrEqual(Date.parse(m.status.endTime) + 1);
});

test('kubevm node drain cordons the node and migrates its VMs away; a non-migratable VM blocks it with the reason', async () => {
  const node = (await get(`${api}/virtualmachines/m2`)).status.node; // m2 shares a directory
  // Put another (migratable) VM on the same node: create it until one lands there.
  let other: string | undefined;
  for (let i = 0; i < 6 && !other; i++) {
    const v = await vm(`d${i}`);
    if (v.status.node === node) other = `d${i}`;
  }
  expect(other).toBeDefined();
  const lines: string[] = [];
  const res = await drainNode(kube, node, { timeoutMs: 60_000, out: (l) => lines.push(l), pollMs: 200 });
  expect(res.ok).toBe(false);
  expect(res.migrated).toContain(`${ns}/${other}`);
  expect(res.blocked).toEqual([expect.stringMatching(/^default\/m2: NotMigratable: .*shares a host directory/)]);
  expect(lines.join('\n')).toContain(`node/${node} cordoned`);
  const n = (await c.request('GET', `/api/v1/nodes/${node}`)).json;
  expect(n.spec.unschedulable).toBe(true);
  const moved = await get(`${api}/virtualmachines/${other}`);
  expect(moved.status.node).not.toBe(node);
  // A cordoned node gets no new VMs.
  const fresh = await vm('after-cordon');
  expect(fresh.status.node).not.toBe(node);
});

test('moving a running interface to another Network re-targets the NIC in place: same instance, same MAC, no restart', async () => {
  for (const n of ['net-a', 'net-b']) await post('networks', { kind: 'Network', metadata: { name: n }, spec: { type: 'bridge' } });
  const v = await vm('r1', { interfaces: [{ name: 'eth0', network: 'net-a' }] });
  const mac = (await get(`${api}/virtualmachineinstances/r1`)).status.interfaces[0].macAddress;
  expect(mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
  await c.request('PATCH', `${api}/virtualmachines/r1`, { spec: { interfaces: [{ name: 'eth0', network: 'net-b' }] } }, { 'Content-Type': 'application/merge-patch+json' });
  const vmi = await eventually(async () => {
    const x = await get(`${api}/virtualmachineinstances/r1`);
    return x.status?.interfaces?.[0]?.network === 'net-b' ? x : undefined;
  }, 10_000, 'interface on net-b');
  expect(vmi.metadata.uid).toBe(v.status.instanceUID);
  expect(vmi.status.interfaces[0].macAddress).toBe(mac);
  const events = await eventually(async () => {
    const list = (await get(`/api/v1/namespaces/${ns}/events`)).items.filter((e: any) => e.involvedObject.name === 'r1' && e.reason === 'InterfaceRetargeted');
    return list.length ? list : undefined;
  }, 10_000, 'InterfaceRetargeted event');
  expect(events[0].message).toContain('interface eth0 now on Network net-b');
  const after = await get(`${api}/virtualmachines/r1`);
  expect(after.status.instanceUID).toBe(v.status.instanceUID);
  expect((after.status.conditions ?? []).find((x: any) => x.type === 'RestartRequired')?.status ?? 'False').toBe('False');
  const sim = rt.agents.find((a) => a.nodeName === v.status.node)!['opts'].backend;
  expect(sim.status(v.status.instanceUID)?.phase).toBe('Running');
});

test('the target node counts a VM migrating to it, so nothing is scheduled into the room the migration took', async () => {
  const v = await vm('m5', { memory: '512Mi' });
  await post('migrations', { kind: 'Migration', metadata: { name: 'mig-5' }, spec: { vm: 'm5' } });
  const running = await eventually(async () => {
    const m = await get(`${api}/migrations/mig-5`);
    return m.status?.phase === 'Running' ? m : undefined;
  }, 10_000, 'mig-5 running');
  const caches = rt.controller.caches;
  const target = running.status.targetNode;
  const during = caches.usedOn(target).mem - caches.usage.of(target).mem;
  expect(during).toBe(512 * 1024 ** 2);
  const m = await done('mig-5');
  expect(m.status.phase).toBe('Succeeded');
  await eventually(async () => ((await get(`${api}/virtualmachineinstances/m5`)).spec.nodeName === target ? true : undefined), 10_000, 'rebound');
  await eventually(() => (caches.usedOn(target).mem === caches.usage.of(target).mem && caches.usage.of(v.status.node).mem >= 0 ? true : undefined), 10_000, 'counted once');
});
