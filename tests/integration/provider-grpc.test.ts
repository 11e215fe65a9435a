import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { startTestCluster, TestCluster, eventually } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import { grpc, providerRpc, providerPb, engineRpc, emptyPb, fromStruct, toStruct } from '../../provider/proto';
import { SECRET_SIG, SIG_KEY, UNKNOWN, secret, isSecret, plain } from '../../provider/values';

/**
 * The provider over the real gRPC wire: the plugin executable is spawned as the
 * engine would (port on the first stdout line, engine address as argument), a
 * fake Engine service collects its log, and the resources live in the embedded
 * cluster with the sim runtime.
 */
const PB = providerPb as any;
const KIND_NAMES: Record<number, string> = Object.fromEntries(Object.entries(PB.PropertyDiff.Kind).map(([k, v]) => [v as number, k]));
const VM = 'kubevm:index:VirtualMachine';
const NET = 'kubevm:index:Network';
const VOL = 'kubevm:index:Volume';
const urn = (type: string, name: string) => `urn:pulumi:dev::provider-test::${type}::${name}`;
const USER_DATA = '#cloud-config\npassword: hunter2-very-secret\n';

let c: TestCluster;
let rt: Runtime;
let child: ChildProcess;
let client: any;
let engine: any;
let kubeconfigText: string;
let stderr = '';
const engineLogs: { severity: number; message: string; urn: string }[] = [];

function rpc<T = any>(method: string, req: any): Promise<T> {
  return new Promise((resolve, reject) => client[method](req, (err: any, res: any) => (err ? reject(err) : resolve(res))));
}

async function check(type: string, name: string, news: any, olds: any = {}) {
  const res = await rpc('check', new PB.CheckRequest().setUrn(urn(type, name)).setOlds(toStruct(olds)).setNews(toStruct(news)));
  return { inputs: fromStruct(res.getInputs())!, failures: res.getFailuresList().map((f: any) => ({ property: f.getProperty(), reason: f.getReason() })) };
}

async function diff(type: string, name: string, olds: any, news: any, id = `default/${name}`) {
  const res = await rpc('diff', new PB.DiffRequest().setUrn(urn(type, name)).setId(id).setOlds(toStruct(olds)).setNews(toStruct(news)));
  const detailed: Record<string, string> = {};
  res.getDetaileddiffMap().forEach((v: any, k: string) => (detailed[k] = KIND_NAMES[v.getKind()]));
  return { changes: res.getChanges(), diffs: res.getDiffsList(), replaces: res.getReplacesList(), deleteBeforeReplace: res.getDeletebeforereplace(), detailed };
}

async function create(type: string, name: string, props: any, opts: { preview?: boolean; timeout?: number } = {}) {
  const res = await rpc('create', new PB.CreateRequest().setUrn(urn(type, name)).setProperties(toStruct(props)).setPreview(!!opts.preview).setTimeout(opts.timeout ?? 0));
  return { id: res.getId() as string, props: fromStruct(res.getProperties())! };
}

async function update(type: string, name: string, id: string, olds: any, news: any, preview = false) {
  const res = await rpc('update', new PB.UpdateRequest().setUrn(urn(type, name)).setId(id).setOlds(toStruct(olds)).setNews(toStruct(news)).setPreview(preview));
  return fromStruct(res.getProperties())!;
}

async function read(type: string, name: string, id: string, props?: any, inputs?: any) {
  const req = new PB.ReadRequest().setUrn(urn(type, name)).setId(id);
  if (props) req.setProperties(toStruct(props));
  if (inputs) req.setInputs(toStruct(inputs));
  const res = await rpc('read', req);
  return { id: res.getId() as string, props: fromStruct(res.getProperties()), inputs: fromStruct(res.getInputs()) };
}

async function del(type: string, name: string, id: string, props: any) {
  await rpc('delete', new PB.DeleteRequest().setUrn(urn(type, name)).setId(id).setProperties(toStruct(props)));
}

/** A full check → create(preview) → create; returns the checked inputs and the outputs. */
async function up(type: string, name: string, news: any) {
  const { inputs, failures } = await check(type, name, news);
  expect(failures).toEqual([]);
  const preview = await create(type, name, inputs, { preview: true });
  expect(preview.props.uid).toBe(UNKNOWN);
  const made = await create(type, name, inputs);
  expect(made.id).toBe(`default/${inputs.name}`);
  return { inputs, id: made.id, props: made.props };
}

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startRuntime({
    kubeconfigPath: c.kubeconfigPath,
    dataDir: c.dataDir,
    nodes: 1,
    backend: 'sim',
    sim: {
      delays: { startMs: 20, guestReadyMs: 50, stopMs: 20, jitter: 0 },
      failStart: (spec) => (spec.name.startsWith('crash') ? 'simulated start failure' : undefined),
    },
  });
  kubeconfigText = fs.readFileSync(c.kubeconfigPath, 'utf8');

  // A fake Engine: the provider sends its progress and warnings here.
  engine = new grpc.Server();
  engine.addService((engineRpc as any).EngineService, {
    log: (call: any, cb: any) => {
      engineLogs.push({ severity: call.request.getSeverity(), message: call.request.getMessage(), urn: call.request.getUrn() });
      cb(null, new emptyPb.Empty());
    },
  });
  const enginePort = await new Promise<number>((res, rej) => engine.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e: any, p: number) => (e ? rej(e) : res(p))));

  const bin = path.join(__dirname, '../../bin/pulumi-resource-kubevm');
  child = spawn(process.execPath, [bin, `127.0.0.1:${enginePort}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stderr!.on('data', (d) => (stderr += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d.toString();
      const line = out.split('\n');
      if (line.length > 1) resolve(Number(line[0]));
    });
    child.on('exit', (code) => reject(new Error(`provider exited with ${code}: ${stderr}`)));
  });
  expect(port).toBeGreaterThan(0);
  client = new (providerRpc as any).ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());

  // CheckConfig keeps the kubeconfig secret; Configure takes it as content.
  const cfg = { kubeconfig: secret(kubeconfigText), namespace: 'default' };
  const checked = await rpc('checkConfig', new PB.CheckRequest().setUrn('urn:pulumi:dev::provider-test::pulumi:providers:kubevm::default').setNews(toStruct(cfg)));
  expect(checked.getFailuresList()).toEqual([]);
  expect(isSecret(fromStruct(checked.getInputs())!.kubeconfig)).toBe(true);
  const conf = await rpc('configure', new PB.ConfigureRequest().setArgs(checked.getInputs()).setAcceptsecrets(true).setAcceptresources(true));
  expect(conf.getSupportspreview()).toBe(true);
  expect(conf.getAcceptsecrets()).toBe(true);
  expect(conf.getSupportsAutonamingConfiguration()).toBe(true);
}, 60_000);

afterAll(async () => {
  client?.close();
  if (child && child.exitCode === null) {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  engine?.forceShutdown();
  await rt?.stop();
  await c?.cleanup();
});

test('plugin info, schema and a bad configuration', async () => {
  const info = await rpc('getPluginInfo', new emptyPb.Empty());
  expect(info.getVersion()).toMatch(/^\d+\.\d+\.\d+/);
  const schema = JSON.parse((await rpc('getSchema', new PB.GetSchemaRequest())).getSchema());
  expect(schema.name).toBe('kubevm');
  const bad = await rpc('checkConfig', new PB.CheckRequest().setNews(toStruct({ kubeconfig: 42, colour: 'red' })));
  expect(bad.getFailuresList().map((f: any) => f.getProperty()).sort()).toEqual(['colour', 'kubeconfig']);
  const d = await rpc('diffConfig', new PB.DiffRequest().setOlds(toStruct({ namespace: 'a' })).setNews(toStruct({ namespace: 'b' })));
  expect(d.getDiffsList()).toEqual(['namespace']);
  expect(d.getReplacesList()).toEqual([]);
});

test('Check names the property, the value and the rule', async () => {
  const { failures } = await check(VM, 'bad', {
    backend: 'sim',
    memory: 'lots',
    colour: 'red',
    disks: [{ name: 'a', volume: 'x' }, { name: 'a', volume: 'y' }],
    interfaces: [{ name: 'eth0', network: 'n', bogus: 1 }],
  });
  const byProp = Object.fromEntries(failures.map((f: any) => [f.property, f.reason]));
  expect(byProp.memory).toContain('"lots"');
  expect(byProp.memory).toContain('pattern');
  expect(byProp.colour).toContain('unknown property');
  expect(byProp['disks[1].name']).toContain('used twice');
  expect(byProp['interfaces[0].bogus']).toContain('unknown property');
  // Unknown values (preview) are not validated; name and namespace get defaults.
  const prev = await check(VM, 'web', { memory: UNKNOWN, backend: 'sim' });
  expect(prev.failures).toEqual([]);
  expect(prev.inputs).toMatchObject({ namespace: 'default', memory: UNKNOWN });
  expect(prev.inputs.name).toMatch(/^web-[a-z0-9]{8}$/); // auto-named from the resource name
});

test("Check follows the stack's autonaming configuration (pulumi:autonaming): propose, enforce, disable", async () => {
  const withAutonaming = async (news: any, mode: number, proposed: string, olds: any = {}) => {
    const an = new PB.CheckRequest.AutonamingOptions().setProposedName(proposed).setMode(mode);
    const res = await rpc('check', new PB.CheckRequest().setUrn(urn(NET, 'net')).setOlds(toStruct(olds)).setNews(toStruct(news)).setAutonaming(an));
    return { inputs: fromStruct(res.getInputs())!, failures: res.getFailuresList().map((f: any) => ({ property: f.getProperty(), reason: f.getReason() })) };
  };
  const { PROPOSE, ENFORCE, DISABLE } = PB.CheckRequest.AutonamingOptions.Mode;
  // The engine's proposal is the name; it is the stack's pattern, not ours (no autoname marker).
  const proposed = await withAutonaming({ type: 'pod' }, PROPOSE, 'prod-net-x1');
  expect(proposed.failures).toEqual([]);
  expect(proposed.inputs).toMatchObject({ name: 'prod-net-x1', namespace: 'default' });
  expect(proposed.inputs.annotations).toBeUndefined();
  expect((await withAutonaming({ type: 'pod' }, ENFORCE, 'net')).inputs.name).toBe('net');
  // An explicit name wins; an existing resource keeps its name.
  expect((await withAutonaming({ type: 'pod', name: 'mine' }, ENFORCE, 'net')).inputs.name).toBe('mine');
  expect((await withAutonaming({ type: 'pod' }, PROPOSE, 'other', { name: 'kept', type: 'pod' })).inputs.name).toBe('kept');
  // disable: a name is required; a proposal that is no DNS label is refused naming the rule.
  expect((await withAutonaming({ type: 'pod' }, DISABLE, '')).failures).toEqual([
    { property: 'name', reason: 'name: required: autonaming is disabled for this stack (pulumi:autonaming mode "disable")' },
  ]);
  expect((await withAutonaming({ type: 'pod', name: 'given' }, DISABLE, '')).failures).toEqual([]);
  expect((await withAutonaming({ type: 'pod' }, PROPOSE, 'Prod_Net')).failures).toEqual([
    { property: 'name', reason: 'name: value "Prod_Net" must be a DNS label (lower-case letters, digits and \'-\', at most 63 characters)' },
  ]);
});

test('Network: check, create (preview), create, diff, update (preview), update, read, delete', async () => {
  const { inputs, id, props } = await up(NET, 'net', { name: 'net', type: 'pod' });
  expect(props).toMatchObject({ name: 'net', namespace: 'default', type: 'pod', phase: 'Ready', bridgeName: '' });
  expect(props.uid).toMatch(/.+/);
  expect((await diff(NET, 'net', props, inputs)).changes).toBe(PB.DiffResponse.DiffChanges.DIFF_NONE);
  const retype = await diff(NET, 'net', props, { ...inputs, type: 'bridge' });
  expect(retype.detailed).toEqual({ type: 'UPDATE_REPLACE' });
  expect(retype.replaces).toEqual(['type']);
  expect(retype.deleteBeforeReplace).toBe(true); // same name: the old one must go first
  const news = { ...inputs, labels: { tier: 'a' } };
  expect((await diff(NET, 'net', props, news)).detailed).toEqual({ labels: 'ADD' });
  expect((await update(NET, 'net', id, props, news, true)).phase).toBe(UNKNOWN);
  const updated = await update(NET, 'net', id, props, news);
  expect(updated.labels).toEqual({ tier: 'a' });
  const got = await read(NET, 'net', id, updated, news);
  expect(got.inputs).toEqual(news);
  expect((await diff(NET, 'net', got.props, news)).changes).toBe(PB.DiffResponse.DiffChanges.DIFF_NONE);
});

test('Volume: lifecycle, every spec change replaces, delete', async () => {
  const { inputs, id, props } = await up(VOL, 'scratch', { name: 'scratch', size: '16Mi', source: { blank: {} } });
  expect(props.phase).toBe('Ready');
  expect(props.path).toMatch(/\.qcow2$/);
  expect((await diff(VOL, 'scratch', props, inputs)).changes).toBe(PB.DiffResponse.DiffChanges.DIFF_NONE);
  expect((await diff(VOL, 'scratch', props, { ...inputs, format: 'qcow2' })).changes).toBe(PB.DiffResponse.DiffChanges.DIFF_NONE); // the default, spelled out
  const bigger = await diff(VOL, 'scratch', props, { ...inputs, size: '32Mi' });
  expect(bigger.detailed).toEqual({ size: 'UPDATE_REPLACE' });
  expect(bigger.deleteBeforeReplace).toBe(true);
  const renamed = await diff(VOL, 'scratch', props, { ...inputs, name: 'scratch2', size: '32Mi' });
  expect(renamed.deleteBeforeReplace).toBe(false); // a new name does not collide
  const news = { ...inputs, labels: { keep: 'yes' } };
  expect((await update(VOL, 'scratch', id, props, news, true)).path).toBe(UNKNOWN);
  const updated = await update(VOL, 'scratch', id, props, news);
  const got = await read(VOL, 'scratch', id, updated, news);
  expect(got.inputs).toEqual(news);
  await del(VOL, 'scratch', id, updated);
  expect((await read(VOL, 'scratch', id, updated, news)).id).toBe('');
});

describe('VirtualMachine', () => {
  let inputs: any;
  let props: any;
  let id: string;

  beforeAll(async () => {
    await up(VOL, 'root-web', { name: 'root-web', size: '16Mi' });
  });

  test('check, create (preview), create: waits for a ready guest; cloud-init stays secret', async () => {
    const r = await up(VM, 'web', {
      name: 'web',
      backend: 'sim',
      memory: '64Mi',
      disks: [{ name: 'root', volume: 'root-web' }],
      interfaces: [{ name: 'eth0', network: 'net' }],
      cloudInit: { userData: secret(USER_DATA), hostname: 'web' },
      labels: { app: 'web' },
    });
    ({ inputs, props, id } = r);
    expect(props).toMatchObject({ ready: true, printableStatus: 'Running', restartRequired: false });
    expect(props.node).toMatch(/^node-/);
    expect(props.cloudInit[SIG_KEY]).toBe(SECRET_SIG);
    expect(props.cloudInit.value.userData).toBe(USER_DATA);
    expect(engineLogs.some((l) => l.message.includes('waiting for VirtualMachine default/web to be ready'))).toBe(true);
  });

  test('a restart-class update under updatePolicy Manual keeps the VM running with restartRequired', async () => {
    const news = { ...inputs, memory: '96Mi' };
    const d = await diff(VM, 'web', props, news);
    expect(d.detailed).toEqual({ memory: 'UPDATE' });
    expect(d.replaces).toEqual([]);
    const preview = await update(VM, 'web', id, props, news, true);
    expect(preview).toMatchObject({ restartRequired: true, restartRequiredFields: ['memory'], ready: UNKNOWN });
    const before = (await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines/web')).json;
    props = await update(VM, 'web', id, props, news);
    inputs = news;
    expect(props).toMatchObject({ restartRequired: true, restartRequiredFields: ['memory'], ready: true, memory: '96Mi' });
    const after = (await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines/web')).json;
    expect(after.status.instanceUID).toBe(before.status.instanceUID); // not restarted
    expect(engineLogs.some((l) => l.severity === 2 && l.message.includes('restartRequired is true'))).toBe(true);
  });

  test('updatePolicy Restart: a restart-class update restarts the VM and waits for the new instance', async () => {
    const before = (await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines/web')).json;
    const news = { ...inputs, updatePolicy: 'Restart', cpu: { cores: 2 } };
    const preview = await update(VM, 'web', id, props, news, true);
    expect(preview.restartRequired).toBe(false);
    props = await update(VM, 'web', id, props, news);
    inputs = news;
    expect(props).toMatchObject({ restartRequired: false, ready: true });
    const after = (await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines/web')).json;
    expect(after.status.instanceUID).not.toBe(before.status.instanceUID);
  });

  test('Read of an untouched VM gives zero diff; import by namespace/name round-trips', async () => {
    const refreshed = await read(VM, 'web', id, props, inputs);
    expect(refreshed.id).toBe(id);
    expect(isSecret(refreshed.inputs!.cloudInit)).toBe(true);
    // Secrets come back at the granularity of a top-level property (all of cloudInit).
    expect(plain(refreshed.inputs)).toEqual(plain(inputs));
    expect((await diff(VM, 'web', refreshed.props, inputs)).changes).toBe(PB.DiffResponse.DiffChanges.DIFF_NONE);

    const imported = await read(VM, 'web', 'default/web');
    expect(isSecret(imported.inputs!.cloudInit)).toBe(true);
    const program = { ...inputs, namespace: undefined, name: undefined };
    const checked = await check(VM, 'web', program, imported.inputs);
    expect(checked.failures).toEqual([]);
    const d = await diff(VM, 'web', imported.props, checked.inputs);
    expect(d.detailed).toEqual({});
    expect(d.changes).toBe(PB.DiffResponse.DiffChanges.DIFF_NONE);
  });

  test('an out-of-band edit shows up as exactly the fields that changed', async () => {
    const r = await c.request(
      'PATCH',
      '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines/web',
      { metadata: { labels: { app: 'ops', team: 'ops' } }, spec: { terminationGracePeriodSeconds: 5, cpu: { cores: 3 } } },
      { 'Content-Type': 'application/merge-patch+json' },
    );
    expect(r.status).toBe(200);
    const refreshed = await read(VM, 'web', id, props, inputs);
    // The engine shows drift with an inverted diff: olds = what was read, news = the last inputs.
    // The label the program does not set (team) is someone else's: not drift.
    const drift = await diff(VM, 'web', refreshed.props, inputs);
    expect(drift.detailed).toEqual({ 'labels.app': 'UPDATE', terminationGracePeriodSeconds: 'UPDATE', 'cpu.cores': 'UPDATE' });
    // Putting it back is an update of those fields; the other label stays.
    props = await update(VM, 'web', id, refreshed.props, inputs);
    expect((await c.request('GET', '/apis/kubevm.dev/v1alpha1/namespaces/default/virtualmachines/web')).json.metadata.labels).toEqual({ app: 'web', team: 'ops' });
    const again = await read(VM, 'web', id, props, inputs);
    expect((await diff(VM, 'web', again.props, inputs)).changes).toBe(PB.DiffResponse.DiffChanges.DIFF_NONE);
  });

  test('Halted: the update is done when the VM is Stopped; delete', async () => {
    const news = { ...inputs, runStrategy: 'Halted' };
    expect((await diff(VM, 'web', props, news)).detailed).toEqual({ runStrategy: 'UPDATE' });
    props = await update(VM, 'web', id, props, news);
    expect(props).toMatchObject({ printableStatus: 'Stopped', ready: false });
    await del(VM, 'web', id, props);
    expect((await read(VM, 'web', id, props, news)).id).toBe('');
  });

  test('a VM that never gets ready fails at the timeout with the last status, conditions and events', async () => {
    const { inputs: crash } = await check(VM, 'crash-1', { name: 'crash-1', backend: 'sim', memory: '64Mi' });
    const err = await create(VM, 'crash-1', crash, { timeout: 3 }).then(
      () => undefined,
      (e) => e,
    );
    expect(err).toBeDefined();
    expect(err.message).toContain('VirtualMachine default/crash-1 to be ready timed out after 3s');
    expect(err.message).toMatch(/printableStatus=(CrashLoopBackOff|Starting)/);
    expect(err.message).toContain('simulated start failure');
    // The object exists: the error carries its id for the engine (ErrorResourceInitFailed).
    expect(err.metadata.get('grpc-status-details-bin').length).toBe(1);
    await del(VM, 'crash-1', 'default/crash-1', {});
  });
});

test('Diff classifies each VirtualMachine field as live, restart or replace', async () => {
  const base = {
    name: 'tbl',
    namespace: 'default',
    backend: 'sim',
    memory: '64Mi',
    disks: [{ name: 'root', volume: 'root-tbl' }],
    interfaces: [{ name: 'eth0', network: 'net' }],
  };
  const olds = { ...base, uid: 'u', ready: true, printableStatus: 'Running', restartRequired: false, restartRequiredFields: [] };
  const rows: [string, any, Record<string, string>, 'live' | 'restart' | 'replace' | 'none'][] = [
    ['runStrategy', { runStrategy: 'Halted' }, { runStrategy: 'UPDATE' }, 'live'],
    ['updatePolicy', { updatePolicy: 'Restart' }, { updatePolicy: 'UPDATE' }, 'live'],
    ['terminationGracePeriodSeconds', { terminationGracePeriodSeconds: 3 }, { terminationGracePeriodSeconds: 'UPDATE' }, 'live'],
    ['add a disk', { disks: [...base.disks, { name: 'data', volume: 'd' }] }, { 'disks[1]': 'ADD' }, 'live'],
    ['remove a disk', { disks: [] }, { 'disks[0]': 'DELETE' }, 'live'],
    ['add an interface', { interfaces: [...base.interfaces, { name: 'eth1', network: 'other' }] }, { 'interfaces[1]': 'ADD' }, 'live'],
    ['retarget an interface', { interfaces: [{ name: 'eth0', network: 'other' }] }, { 'interfaces[0].network': 'UPDATE' }, 'live'],
    ['port forwards of an interface', { interfaces: [{ name: 'eth0', network: 'net', ports: [{ port: 8080 }] }] }, { 'interfaces[0].ports': 'ADD' }, 'live'],
    ['add a filesystem', { filesystems: [{ name: 'share', containerPath: { path: '/srv' } }] }, { filesystems: 'ADD' }, 'live'],
    ['labels', { labels: { a: 'b' } }, { labels: 'ADD' }, 'live'],
    ['memory', { memory: '128Mi' }, { memory: 'UPDATE' }, 'restart'],
    ['cpu.cores', { cpu: { cores: 2 } }, { cpu: 'ADD' }, 'restart'],
    ['cpu.cores again', { cpu: { cores: 4 } }, { 'cpu.cores': 'UPDATE' }, 'restart'],
    ['backend', { backend: 'qemu' }, { backend: 'UPDATE' }, 'restart'],
    ['machine', { machine: 'pc' }, { machine: 'UPDATE' }, 'restart'],
    ['firmware', { firmware: { bootloader: 'efi' } }, { firmware: 'ADD' }, 'restart'],
    ['cloudInit', { cloudInit: secret({ userData: 'x' }) }, { cloudInit: 'ADD' }, 'restart'],
    ['nodeSelector', { nodeSelector: { zone: 'a' } }, { nodeSelector: 'ADD' }, 'restart'],
    ['hotplugSlots', { hotplugSlots: 8 }, { hotplugSlots: 'UPDATE' }, 'restart'], // UPDATE: the default 4 counts as set
    ['name', { name: 'tbl2' }, { name: 'UPDATE_REPLACE' }, 'replace'],
    ['namespace', { namespace: 'other' }, { namespace: 'UPDATE_REPLACE' }, 'replace'],
    ['a default spelled out', { machine: 'q35', runStrategy: 'Always', hotplugSlots: 4, disks: [{ name: 'root', volume: 'root-tbl', bus: 'virtio' }] }, {}, 'none'],
    ['an unknown value (preview)', { memory: UNKNOWN }, { memory: 'UPDATE' }, 'restart'],
  ];
  for (const [what, change, detailed, cls] of rows) {
    const news = { ...base, ...change };
    const o = what === 'cpu.cores again' ? { ...olds, cpu: { cores: 2 } } : olds;
    const d = await diff(VM, 'tbl', o, news, 'default/tbl');
    expect({ what, detailed: d.detailed }).toEqual({ what, detailed });
    expect({ what, replaces: d.replaces }).toEqual({ what, replaces: cls === 'replace' ? Object.keys(change) : [] });
    expect({ what, changes: d.changes }).toEqual({ what, changes: cls === 'none' ? PB.DiffResponse.DiffChanges.DIFF_NONE : PB.DiffResponse.DiffChanges.DIFF_SOME });
    if (cls === 'replace') expect(d.deleteBeforeReplace).toBe(false); // a new name or namespace does not collide
    if (cls === 'live' || cls === 'restart') {
      const preview = await update(VM, 'tbl', 'default/tbl', o, news, true);
      expect({ what, restartRequired: preview.restartRequired }).toEqual({ what, restartRequired: cls === 'restart' });
    }
  }
});

test('secrets never reach the logs in plain text', async () => {
  await eventually(() => engineLogs.length > 0, 5000, 'engine logs');
  const token = /token:\s*(\S+)/.exec(kubeconfigText)?.[1];
  const all = stderr + engineLogs.map((l) => l.message).join('\n');
  expect(all).not.toContain('hunter2');
  if (token) expect(all).not.toContain(token);
  expect(all).not.toContain('BEGIN CERTIFICATE');
});
