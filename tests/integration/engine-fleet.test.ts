import * as fs from 'node:fs';
import * as path from 'node:path';
import { startTestCluster, TestCluster, tempDir } from '../helpers/cluster';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import { runEngine, type EngineOptions } from '../../engine/engine';

/**
 * examples/fleet through the local engine (`kubevm up`'s engine API) on the embedded
 * cluster with sim nodes: the VMs exist with the merged settings (defaults ← role ← VM),
 * each with its Volume on the shared Network; a second preview changes nothing; destroy
 * removes everything.
 */
const PROGRAM = path.join(__dirname, '../../examples/fleet');
const api = '/apis/kubevm.dev/v1alpha1/namespaces/default';

let c: TestCluster;
let rt: Runtime;
let dir: string;
let opts: EngineOptions;
let lines: string[] = [];

/** What the fleet's list says each VM ends up with. */
const EXPECTED: Record<
  string,
  { memory: string; cores: number; runStrategy: string; disk: string; labels: Record<string, string> }
> = {
  'web-1': {
    memory: '128Mi',
    cores: 1,
    runStrategy: 'Always',
    disk: '16Mi',
    labels: { app: 'shop', tier: 'frontend', fleet: 'fleet', role: 'web' },
  },
  'web-2': {
    memory: '128Mi',
    cores: 1,
    runStrategy: 'Always',
    disk: '16Mi',
    labels: { app: 'shop', tier: 'frontend', fleet: 'fleet', role: 'web' },
  },
  'worker-1': {
    memory: '192Mi',
    cores: 1,
    runStrategy: 'Always',
    disk: '32Mi',
    labels: { app: 'shop', tier: 'backend', fleet: 'fleet', role: 'worker' },
  },
  'worker-2': {
    memory: '192Mi',
    cores: 1,
    runStrategy: 'Halted',
    disk: '32Mi',
    labels: { app: 'shop', tier: 'backend', fleet: 'fleet', role: 'worker' },
  },
  'db-1': {
    memory: '384Mi',
    cores: 2,
    runStrategy: 'Always',
    disk: '64Mi',
    labels: { app: 'shop', tier: 'data', backup: 'daily', fleet: 'fleet', role: 'db' },
  },
};

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startSimRuntime(c, { nodeCapacity: { cpu: 16, memoryBytes: 16 * 2 ** 30 } });
  dir = tempDir();
  opts = {
    programDir: PROGRAM,
    statePath: path.join(dir, 'fleet.json'),
    kubeconfig: c.kubeconfigPath,
    out: (l) => lines.push(l),
  };
}, 60_000);

afterAll(async () => {
  await rt?.stop();
  await c?.cleanup();
  fs.rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  lines = [];
});

test('up creates the Network, a Volume and a VM per entry, with the merged settings', async () => {
  const r = await runEngine('up', opts);
  expect(r.errors).toEqual([]);
  const created = r.steps.filter((s) => s.op === 'create').map((s) => `${s.type.split(':').pop()} ${s.name}`);
  expect(created.sort()).toEqual(
    [
      'Network fleet-net',
      ...Object.keys(EXPECTED).flatMap((n) => [`Volume fleet-${n}-data`, `VirtualMachine fleet-${n}`]),
    ].sort(),
  );

  for (const [name, want] of Object.entries(EXPECTED)) {
    const vm = (await c.request('GET', `${api}/virtualmachines/fleet-${name}`)).json;
    expect({
      name,
      memory: vm.spec.memory,
      cores: vm.spec.cpu.cores,
      runStrategy: vm.spec.runStrategy,
      labels: vm.metadata.labels,
    }).toEqual({
      name,
      memory: want.memory,
      cores: want.cores,
      runStrategy: want.runStrategy,
      labels: want.labels,
    });
    expect(vm.spec.disks).toEqual([expect.objectContaining({ name: 'data', volume: `fleet-${name}-data` })]);
    expect(vm.spec.interfaces).toEqual([expect.objectContaining({ name: 'eth0', network: 'fleet-net' })]);
    expect(vm.status.printableStatus).toBe(want.runStrategy === 'Halted' ? 'Stopped' : 'Running');
    const vol = (await c.request('GET', `${api}/volumes/fleet-${name}-data`)).json;
    expect(vol.spec.size).toBe(want.disk);
  }

  // The stack output lists every VM with what the cluster reports.
  const out = r.outputs.vms as any[];
  expect(out.map((v) => [v.name, v.role, v.memory, v.cores, v.status])).toEqual(
    Object.entries(EXPECTED).map(([n, w]) => [
      `fleet-${n}`,
      w.labels.role,
      w.memory,
      w.cores,
      w.runStrategy === 'Halted' ? 'Stopped' : 'Running',
    ]),
  );
  expect(r.outputs.network).toBe('fleet-net');
}, 120_000);

test('a second preview reports zero changes', async () => {
  const r = await runEngine('preview', { ...opts, refresh: true });
  expect(r.errors).toEqual([]);
  expect(r.changes).toBe(0);
  expect(lines).toContain('Resources: 11 unchanged');
}, 60_000);

test('destroy removes every VM, Volume and the Network', async () => {
  const r = await runEngine('destroy', opts);
  expect(r.errors).toEqual([]);
  expect(r.steps.filter((s) => s.op === 'delete')).toHaveLength(11);
  const list = async (kind: string) => (await c.request('GET', `${api}/${kind}`)).json.items.map((o: any) => o.metadata.name);
  expect(await list('virtualmachines')).toEqual([]);
  expect(await list('volumes')).toEqual([]);
  expect(await list('networks')).toEqual([]);
  expect(JSON.parse(fs.readFileSync(opts.statePath!, 'utf8')).resources).toEqual([]);
}, 60_000);
