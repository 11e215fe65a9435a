import * as fs from 'node:fs';
import * as path from 'node:path';
import { startTestCluster, TestCluster, tempDir } from '../helpers/cluster';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import { runEngine, type EngineOptions } from '../../engine/engine';
import { engineCommand } from '../../engine/cli';

/**
 * The local engine end to end: a real Pulumi program (tests/fixtures/programs/small,
 * one Network, one Volume, one sim VM) run through @pulumi/pulumi/cmd/run against the
 * engine's ResourceMonitor, the kubevm provider over gRPC, the embedded cluster and
 * the sim VM runtime.
 */
const PROGRAM = path.join(__dirname, '../fixtures/programs/small');
const api = '/apis/kubevm.dev/v1alpha1/namespaces/default';

let c: TestCluster;
let rt: Runtime;
let statePath: string;
let lines: string[] = [];
let opts: EngineOptions;

const get = async (p: string) => c.request('GET', `${api}/${p}`);
/** The CLI entry point, output captured; resolves with the exit code. */
const cli = (op: 'up' | 'preview' | 'refresh' | 'destroy', ...args: string[]) =>
  engineCommand(op, [PROGRAM, '--state', statePath, '--kubeconfig', c.kubeconfigPath, ...args], { out: (l) => lines.push(l) });

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startSimRuntime(c);
  statePath = path.join(tempDir(), 'state.json');
  opts = { programDir: PROGRAM, statePath, kubeconfig: c.kubeconfigPath, out: (l) => lines.push(l) };
}, 60_000);

afterAll(async () => {
  await rt?.stop();
  await c?.cleanup();
  fs.rmSync(path.dirname(statePath), { recursive: true, force: true });
});

beforeEach(() => {
  lines = [];
});

test('up creates the Network, the Volume and a Running VM; the state holds no secret in plain text', async () => {
  const r = await runEngine('up', opts);
  expect(r.errors).toEqual([]);
  expect(r.steps.map((s) => `${s.op} ${s.name}`).sort()).toEqual(['create small-net', 'create small-root', 'create small-vm']);
  const vm = (await get('virtualmachines/small-vm')).json;
  expect(vm.status.printableStatus).toBe('Running');
  expect(vm.spec.memory).toBe('64Mi');
  expect((await get('volumes/small-root')).status).toBe(200);
  expect((await get('networks/small-net')).status).toBe(200);

  const text = fs.readFileSync(statePath, 'utf8');
  const state = JSON.parse(text);
  expect(state.resources.map((x: any) => x.type).sort()).toEqual([
    'kubevm:index:Network',
    'kubevm:index:VirtualMachine',
    'kubevm:index:Volume',
    'pulumi:pulumi:Stack',
  ]);
  // The stack's entry keeps the program's outputs (`export const vmStatus = …`).
  expect(state.resources.find((x: any) => x.type === 'pulumi:pulumi:Stack').outputs).toEqual({
    vmStatus: 'Running',
    vmNode: expect.any(String),
  });
  expect(r.outputs.vmStatus).toBe('Running');
  const vmState = state.resources.find((x: any) => x.urn.endsWith('::small-vm'));
  expect(vmState.id).toBe('default/small-vm');
  expect(vmState.outputs.printableStatus).toBe('Running');
  // The VM depends on the Volume and the Network (their names flow in as outputs), so it is last.
  expect(vmState.dependencies.sort()).toEqual([
    'urn:pulumi:dev::small::kubevm:index:Network::small-net',
    'urn:pulumi:dev::small::kubevm:index:Volume::small-root',
  ]);
  expect(state.resources[2].urn).toMatch(/small-vm$/);
  expect(text).not.toContain('engine-test-secret');
  expect(vmState.outputs.cloudInit.ciphertext).toEqual(expect.any(String));
}, 60_000);

test('a second preview finds no changes: --expect-no-changes passes', async () => {
  expect(await cli('preview', '--expect-no-changes')).toBe(0);
  expect(lines).toContain('Resources: 3 unchanged');
}, 60_000);

test('a program edit shows a per-property diff in preview, and up applies it', async () => {
  expect(await cli('preview', '-c', 'memory=96Mi', '--expect-no-changes')).toBe(1);
  expect(lines).toContain('~ kubevm:index:VirtualMachine small-vm update');
  expect(lines).toContain('    ~ memory: "64Mi" => "96Mi"');
  expect(lines).toContain('Resources: 1 to update, 2 unchanged');
  const before = fs.readFileSync(statePath, 'utf8');

  const r = await runEngine('up', { ...opts, config: { memory: '96Mi' } });
  expect(r.errors).toEqual([]);
  expect(r.steps.filter((s) => s.op !== 'same').map((s) => [s.op, s.name, s.changes.map((x) => x.path)])).toEqual([
    ['update', 'small-vm', ['memory']],
  ]);
  expect(before).not.toBe(fs.readFileSync(statePath, 'utf8'));
  expect((await get('virtualmachines/small-vm')).json.spec.memory).toBe('96Mi');
  expect(await cli('preview', '-c', 'memory=96Mi', '--expect-no-changes')).toBe(0);
}, 60_000);

test('an out-of-band edit: refresh records it, and preview shows exactly that field', async () => {
  // tier is the program's label; team is someone else's (kubectl label): not drift, and left alone.
  const patched = await c.request(
    'PATCH',
    `${api}/virtualmachines/small-vm`,
    { metadata: { labels: { tier: 'ops', team: 'ops' } } },
    { 'Content-Type': 'application/merge-patch+json' },
  );
  expect(patched.status).toBe(200);
  // A plain preview compares with the recorded state: nothing to see yet.
  expect((await runEngine('preview', { ...opts, config: { memory: '96Mi' } })).changes).toBe(0);

  expect(await cli('refresh')).toBe(0);
  expect(lines).toContain('~ kubevm:index:VirtualMachine small-vm refreshed');
  expect(lines.some((l) => l.includes('labels: {tier: "web"} => {tier: "ops"}'))).toBe(true);

  const p = await runEngine('preview', { ...opts, config: { memory: '96Mi' } });
  const changed = p.steps.filter((s) => s.op !== 'same');
  expect(changed.map((s) => [s.op, s.name])).toEqual([['update', 'small-vm']]);
  expect(changed[0].changes).toEqual([{ path: 'labels.tier', kind: 'UPDATE', old: 'ops', new: 'web' }]);
  expect(lines).toContain('    ~ labels.tier: "ops" => "web"');
}, 60_000);

test('destroy removes everything, dependents first', async () => {
  const r = await runEngine('destroy', opts);
  expect(r.errors).toEqual([]);
  expect(r.steps.map((s) => s.op)).toEqual(['delete', 'delete', 'delete']);
  expect(r.steps[0].name).toBe('small-vm'); // the VM uses the other two
  for (const p of ['virtualmachines/small-vm', 'volumes/small-root', 'networks/small-net'])
    expect((await get(p)).status).toBe(404);
  expect(JSON.parse(fs.readFileSync(statePath, 'utf8')).resources).toEqual([]);
  expect((await runEngine('preview', opts)).steps.map((s) => s.op)).toEqual(['create', 'create', 'create']);
}, 60_000);
