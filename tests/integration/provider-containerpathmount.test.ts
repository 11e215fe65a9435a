import * as fs from 'node:fs';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';
import { startProvider, ProviderHarness, DIFF_NONE, DIFF_SOME } from '../helpers/provider';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import { providerPb, fromStruct, toStruct } from '../../provider/proto';
import { UNKNOWN } from '../../provider/values';
import { AUTONAMED, MANAGED_ANNOTATIONS, MANAGED_LABELS } from '../../provider/resources/common';

/**
 * Over the real gRPC wire (the plugin executable) against the embedded cluster
 * with the controller and a sim node agent: the ContainerPathMount lifecycle,
 * labels and annotations that merge with what others (kubectl) add, and
 * autonaming.
 */
const PB = providerPb as any;
const CPM = 'kubevm:index:ContainerPathMount';
const NET = 'kubevm:index:Network';
const api = '/apis/kubevm.dev/v1alpha1/namespaces/default';

let c: TestCluster;
let rt: Runtime;
let p: ProviderHarness;
let shared: string;
const get = async (p: string) => (await c.request('GET', p)).json;

/** Check with a random seed, as the engine sends it. */
async function checkSeeded(type: string, name: string, news: any, olds: any, seed: string) {
  const res = await p.rpc(
    'check',
    new PB.CheckRequest()
      .setUrn(p.urn(type, name))
      .setOlds(toStruct(olds))
      .setNews(toStruct(news))
      .setRandomseed(Buffer.from(seed)),
  );
  return {
    inputs: fromStruct(res.getInputs())!,
    failures: res.getFailuresList().map((f: any) => ({ property: f.getProperty(), reason: f.getReason() })),
  };
}

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startSimRuntime(c);
  shared = path.join(c.dataDir, 'shared'); // the runtime's default allowed root
  for (const d of ['site', 'site2']) fs.mkdirSync(path.join(shared, d), { recursive: true });
  p = await startProvider({ kubeconfigPath: c.kubeconfigPath, project: 'cpm-test' });
  for (const [name, runStrategy] of [
    ['web', 'Always'],
    ['cold', 'Halted'],
  ])
    expect(
      (
        await c.request('POST', `${api}/virtualmachines`, {
          apiVersion: 'kubevm.dev/v1alpha1',
          kind: 'VirtualMachine',
          metadata: { name },
          spec: { backend: 'sim', memory: '64Mi', runStrategy },
        })
      ).status,
    ).toBe(201);
  await eventually(async () => (await get(`${api}/virtualmachines/web`)).status?.ready, 15_000, 'web ready');
}, 60_000);

afterAll(async () => {
  await p?.close();
  await rt?.stop();
  await c?.cleanup();
});

test('ContainerPathMount: check, create (preview), create, diff, update (preview), update, read, delete', async () => {
  // Check: each failure names the property.
  const bad = await p.check(CPM, 'bad', {
    vm: 'Web',
    path: `${shared}/../etc`,
    tag: 't'.repeat(32),
    readOnly: false,
    colour: 'red',
  });
  expect(bad.failures.map((f) => f.property).sort()).toEqual(['colour', 'path', 'readOnly', 'tag', 'vm']);
  expect(bad.failures.find((f) => f.property === 'tag')!.reason).toContain('must NOT have more than 31 characters');
  expect((await p.check(CPM, 'bad', { path: '/srv' })).failures.map((f) => f.property).sort()).toEqual(['tag', 'vm']);

  const { inputs, failures } = await p.check(CPM, 'site', {
    name: 'site',
    vm: 'web',
    path: path.join(shared, 'site'),
    tag: 'site',
  });
  expect(failures).toEqual([]);
  const preview = await p.create(CPM, 'site', inputs, { preview: true });
  expect(preview).toMatchObject({ id: 'default/site', props: { phase: UNKNOWN, node: UNKNOWN, uid: UNKNOWN } });
  expect((await c.request('GET', `${api}/containerpathmounts/site`)).status).toBe(404); // a preview writes nothing

  const made = await p.create(CPM, 'site', inputs);
  expect(made.id).toBe('default/site');
  // Create waited for the agent: Attached on the node of the running instance.
  expect(made.props).toMatchObject({
    phase: 'Attached',
    reason: 'Attached',
    node: 'node-0',
    restartRequired: false,
    vm: 'web',
    tag: 'site',
  });
  const vmi = await get(`${api}/virtualmachineinstances/web`);
  expect(vmi.status.filesystems).toEqual([{ name: 'site', mount: 'site', path: path.join(shared, 'site'), phase: 'Attached' }]);
  expect(p.logs.some((l) => l.message.includes('waiting for ContainerPathMount default/site to be ready'))).toBe(true);

  // Diff: no change; readOnly spelled out is the default; path, tag, vm replace (same vm and tag: delete first).
  expect((await p.diff(CPM, 'site', made.props, inputs, made.id)).changes).toBe(DIFF_NONE);
  expect((await p.diff(CPM, 'site', made.props, { ...inputs, readOnly: true }, made.id)).changes).toBe(DIFF_NONE);
  const moved = await p.diff(CPM, 'site', made.props, { ...inputs, path: path.join(shared, 'site2') }, made.id);
  expect(moved).toMatchObject({ detailed: { path: 'UPDATE_REPLACE' }, replaces: ['path'], deleteBeforeReplace: true });
  const retag = await p.diff(CPM, 'site', made.props, { ...inputs, name: 'site-b', tag: 'site-b' }, made.id);
  expect(retag).toMatchObject({ replaces: ['name', 'tag'], deleteBeforeReplace: false });
  expect((await p.diff(CPM, 'site', made.props, { ...inputs, vm: 'cold' }, made.id)).replaces).toEqual(['vm']);

  // Update: labels are live.
  const news = { ...inputs, labels: { team: 'web' } };
  const d = await p.diff(CPM, 'site', made.props, news, made.id);
  expect(d).toMatchObject({ changes: DIFF_SOME, detailed: { labels: 'ADD' }, replaces: [] });
  expect((await p.update(CPM, 'site', made.id, made.props, news, { preview: true })).phase).toBe(UNKNOWN);
  const updated = await p.update(CPM, 'site', made.id, made.props, news);
  expect(updated).toMatchObject({ phase: 'Attached', labels: { team: 'web' } });

  // Read: zero diff; import round-trips.
  const got = await p.read(CPM, 'site', made.id, updated, news);
  expect(got.inputs).toEqual(news);
  expect((await p.diff(CPM, 'site', got.props, news, made.id)).changes).toBe(DIFF_NONE);
  const imported = await p.read(CPM, 'site', made.id);
  const program = await p.check(
    CPM,
    'site',
    { vm: 'web', path: path.join(shared, 'site'), tag: 'site', labels: { team: 'web' } },
    imported.inputs,
  );
  expect(program.inputs.name).toBe('site');
  expect((await p.diff(CPM, 'site', imported.props, program.inputs, made.id)).changes).toBe(DIFF_NONE);

  // Delete: the object goes; the sim backend cannot unplug, so the share waits for the VM's next start.
  await p.del(CPM, 'site', made.id, updated);
  expect((await p.read(CPM, 'site', made.id, updated, news)).id).toBe('');
  const after = await eventually(
    async () => {
      const i = await get(`${api}/virtualmachineinstances/web`);
      return i.status.filesystems?.[0]?.phase === 'DetachPending' ? i : undefined;
    },
    10_000,
    'DetachPending',
  );
  expect(after.spec.filesystems).toBeUndefined();
  await eventually(
    async () => (await get(`${api}/virtualmachines/web`)).status.restartRequiredFields?.includes('spec.filesystems'),
    10_000,
    'RestartRequired',
  );
});

test('ContainerPathMount of a stopped VM: create is done at once (Pending, attached at the next start); a tag conflict fails with the reason', async () => {
  const { inputs } = await p.check(CPM, 'cold-site', {
    name: 'cold-site',
    vm: 'cold',
    path: path.join(shared, 'site'),
    tag: 'site',
  });
  const made = await p.create(CPM, 'cold-site', inputs);
  expect(made.props).toMatchObject({ phase: 'Pending', reason: 'VMNotRunning', node: '' });
  expect(made.props.message).toContain('attached at its next start');
  const twin = await p.check(CPM, 'cold-twin', { name: 'cold-twin', vm: 'cold', path: path.join(shared, 'site2'), tag: 'site' });
  const err = await p.create(CPM, 'cold-twin', twin.inputs, { timeout: 10 }).then(
    () => undefined,
    (e) => e,
  );
  expect(err.message).toContain(
    'ContainerPathMount default/cold-twin to be ready failed: TagConflict: tag site is already used by ContainerPathMount cold-site',
  );
  await p.del(CPM, 'cold-twin', 'default/cold-twin', twin.inputs);
  await p.del(CPM, 'cold-site', made.id, made.props);
});

test('labels and annotations merge: kubectl additions are kept and are not drift; the program removes only its own keys', async () => {
  const { inputs } = await p.check(NET, 'lan', {
    name: 'lan',
    type: 'pod',
    labels: { app: 'demo', tier: 'a' },
    annotations: { note: 'from pulumi' },
  });
  const made = await p.create(NET, 'lan', inputs);
  const obj = await get(`${api}/networks/lan`);
  expect(obj.metadata.annotations).toMatchObject({
    note: 'from pulumi',
    [MANAGED_LABELS]: 'app,tier',
    [MANAGED_ANNOTATIONS]: 'note',
  });

  expect((await c.kubectl(['label', 'network', 'lan', 'owner=ops'])).code).toBe(0);
  expect((await c.kubectl(['annotate', 'network', 'lan', 'ops.example.com/ticket=42'])).code).toBe(0);
  // Refresh: zero diff.
  const refreshed = await p.read(NET, 'lan', made.id, made.props, inputs);
  expect(refreshed.inputs).toEqual(inputs);
  expect((await p.diff(NET, 'lan', refreshed.props, inputs, made.id)).changes).toBe(DIFF_NONE);
  // Up with a program change: kubectl's label and annotation survive.
  const news = { ...inputs, labels: { app: 'demo', tier: 'b' } };
  expect((await p.diff(NET, 'lan', refreshed.props, news, made.id)).detailed).toEqual({ 'labels.tier': 'UPDATE' });
  const updated = await p.update(NET, 'lan', made.id, refreshed.props, news);
  let live = await get(`${api}/networks/lan`);
  expect(live.metadata.labels).toEqual({ app: 'demo', tier: 'b', owner: 'ops' });
  expect(live.metadata.annotations['ops.example.com/ticket']).toBe('42');
  // The program drops its own label and annotation: they go, the others stay.
  const fewer = { ...inputs, labels: { app: 'demo' }, annotations: {} };
  expect((await p.diff(NET, 'lan', updated, fewer, made.id)).detailed).toEqual({
    'labels.tier': 'DELETE',
    annotations: 'DELETE',
  }); // an empty map is none
  const after = await p.update(NET, 'lan', made.id, updated, fewer);
  live = await get(`${api}/networks/lan`);
  expect(live.metadata.labels).toEqual({ app: 'demo', owner: 'ops' });
  expect(live.metadata.annotations).toEqual({
    'ops.example.com/ticket': '42',
    [MANAGED_LABELS]: 'app',
    [MANAGED_ANNOTATIONS]: '',
  });
  // A managed label changed out of band is drift, exactly that key.
  expect((await c.kubectl(['label', 'network', 'lan', 'app=other', '--overwrite'])).code).toBe(0);
  const drift = await p.read(NET, 'lan', made.id, after, fewer);
  expect((await p.diff(NET, 'lan', drift.props, fewer, made.id)).detailed).toEqual({ 'labels.app': 'UPDATE' });
  await p.del(NET, 'lan', made.id, after);
});

test('autonaming: logical name + random suffix, the same in preview and update, kept across updates; a replacement gets a new name first', async () => {
  const seed = 'deployment-1';
  const first = await checkSeeded(NET, 'auto', { type: 'pod' }, {}, seed);
  expect(first.failures).toEqual([]);
  expect(first.inputs.name).toMatch(/^auto-[a-z0-9]{8}$/);
  expect(first.inputs.annotations).toEqual({ [AUTONAMED]: 'true' });
  // The preview's Check and the update's Check (same seed) agree.
  expect((await checkSeeded(NET, 'auto', { type: 'pod' }, {}, seed)).inputs.name).toBe(first.inputs.name);
  const made = await p.create(NET, 'auto', first.inputs);
  expect(made.id).toBe(`default/${first.inputs.name}`);
  expect((await get(`${api}/networks/${first.inputs.name}`)).metadata.annotations[AUTONAMED]).toBe('true');

  // The next deployment (another seed) keeps the name: olds carry it.
  const next = await checkSeeded(NET, 'auto', { type: 'pod', labels: { x: 'y' } }, first.inputs, 'deployment-2');
  expect(next.inputs.name).toBe(first.inputs.name);
  const updated = await p.update(NET, 'auto', made.id, made.props, next.inputs);
  expect(updated.name).toBe(first.inputs.name);

  // Replace: no delete first; the engine checks the replacement again without olds and gets a new name.
  const d = await p.diff(NET, 'auto', updated, { ...next.inputs, type: 'user' }, made.id);
  expect(d).toMatchObject({ replaces: ['type'], deleteBeforeReplace: false });
  const fresh = await checkSeeded(NET, 'auto', { type: 'user', labels: { x: 'y' } }, {}, 'deployment-3');
  expect(fresh.inputs.name).toMatch(/^auto-[a-z0-9]{8}$/);
  expect(fresh.inputs.name).not.toBe(first.inputs.name);
  const replacement = await p.create(NET, 'auto', fresh.inputs);
  expect((await get(`${api}/networks/${first.inputs.name}`)).spec.type).toBe('pod'); // both exist for a moment
  await p.del(NET, 'auto', made.id, updated);
  expect((await c.request('GET', `${api}/networks/${first.inputs.name}`)).status).toBe(404);

  // Import of an autonamed object round-trips: the name and the marker come back.
  const imported = await p.read(NET, 'auto', replacement.id);
  expect(imported.inputs).toMatchObject({ name: fresh.inputs.name, annotations: { [AUTONAMED]: 'true' }, labels: { x: 'y' } });
  const program = await checkSeeded(NET, 'auto', { type: 'user', labels: { x: 'y' } }, imported.inputs, 'deployment-4');
  expect(program.inputs.name).toBe(fresh.inputs.name);
  expect((await p.diff(NET, 'auto', imported.props, program.inputs, replacement.id)).changes).toBe(DIFF_NONE);
  await p.del(NET, 'auto', replacement.id, replacement.props);
});
