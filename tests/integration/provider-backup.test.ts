import * as fs from 'node:fs';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually, tempDir } from '../helpers/cluster';
import { startProvider, ProviderHarness, DIFF_NONE, DIFF_SOME } from '../helpers/provider';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import { runEngine, type EngineOptions } from '../../engine/engine';
import { UNKNOWN } from '../../provider/values';

/**
 * Backups through the provider, over the real gRPC wire (the plugin executable),
 * against the embedded cluster with the controller and a sim node agent:
 * the BackupPolicy resource's whole lifecycle, a policy that makes backups on
 * its schedule, listBackups, and Volumes restored with `source.fromBackup`;
 * then the same from a real Pulumi program through the local engine and the SDK.
 * (The data path on real disks is tests/e2e/backup-qemu.test.ts.)
 */
const BP = 'kubevm:index:BackupPolicy';
const VOL = 'kubevm:index:Volume';
const LIST = 'kubevm:index:listBackups';
const ns = 'default';
const api = `/apis/kubevm.dev/v1alpha1/namespaces/${ns}`;

let c: TestCluster;
let rt: Runtime;
let p: ProviderHarness;

const get = async (path: string) => (await c.request('GET', path)).json;
const merge = (path: string, body: any) => c.request('PATCH', path, body, { 'Content-Type': 'application/merge-patch+json' });
const errorOf = (promise: Promise<unknown>) =>
  promise.then(
    () => undefined,
    (e) => e,
  );

async function post(plural: string, body: any): Promise<any> {
  const r = await c.request('POST', `${api}/${plural}`, { apiVersion: 'kubevm.dev/v1alpha1', ...body });
  if (r.status !== 201) throw new Error(`POST ${plural}: ${r.status} ${r.text}`);
  return r.json;
}

async function vm(name: string): Promise<void> {
  await post('volumes', { kind: 'Volume', metadata: { name: `${name}-root` }, spec: { size: '16Mi', source: { blank: {} } } });
  await post('virtualmachines', {
    kind: 'VirtualMachine',
    metadata: { name, labels: { backup: 'nightly' } },
    spec: { backend: 'sim', memory: '64Mi', disks: [{ name: 'root', volume: `${name}-root` }] },
  });
  await eventually(
    async () => ((await get(`${api}/virtualmachines/${name}`)).status?.ready ? true : undefined),
    20_000,
    `${name} running`,
  );
}

/** Check → Create, as the engine does. */
async function up(type: string, name: string, news: any, timeout = 0) {
  const { inputs, failures } = await p.check(type, name, news);
  expect(failures).toEqual([]);
  const made = await p.create(type, name, inputs, { timeout });
  return { inputs, ...made };
}

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startSimRuntime(c, { nodeCapacity: { cpu: 32, memoryBytes: 64 * 1024 ** 3 }, sim: { delays: { startMs: 20, guestReadyMs: 50, stopMs: 20, jitter: 0, backupMs: 200 } } });
  p = await startProvider({ kubeconfigPath: c.kubeconfigPath, project: 'backup-test' });
  await vm('db');
  await vm('web');
}, 90_000);

afterAll(async () => {
  await p?.close();
  await rt?.stop();
  await c?.cleanup();
});

describe('BackupPolicy', () => {
  test("Check refuses bad input naming the field and the rule (cron and time zone checked by the controller's own parser)", async () => {
    const bad = async (news: any) =>
      (await p.check(BP, 'bad', { name: 'bad', vms: ['db'], schedule: '@daily', ...news })).failures;
    expect(await bad({ schedule: '0 25 * * *' })).toEqual([
      { property: 'schedule', reason: 'schedule: field "hour" value 25 is out of range 0-23' },
    ]);
    expect(await bad({ schedule: '@reboot' })).toEqual([
      expect.objectContaining({ property: 'schedule', reason: expect.stringContaining('"@reboot" is not supported') }),
    ]);
    expect(await bad({ timeZone: '+01:00' })).toEqual([
      { property: 'timeZone', reason: expect.stringContaining('timeZone: "+01:00" is not an IANA time zone name') },
    ]);
    expect(await bad({ retention: { keepLast: 0 } })).toEqual([
      { property: 'retention.keepLast', reason: 'retention.keepLast: value 0 must be >= 1' },
    ]);
    expect(await bad({ full: { interval: 'weekly' } })).toEqual([expect.objectContaining({ property: 'full.interval' })]);
    expect(await bad({ target: { path: 'relative/dir' } })).toEqual([expect.objectContaining({ property: 'target.path' })]);
    expect(await bad({ vms: undefined })).toEqual([
      { property: 'vms', reason: 'vms: set vms or selector.matchLabels (or both): the policy selects no VirtualMachine' },
    ]);
    expect(await bad({ vms: [], selector: { matchLabels: {} } })).toHaveLength(1);
    expect(await bad({ schedule: undefined })).toEqual([{ property: 'schedule', reason: 'schedule: required' }]);
    expect(await bad({ keep: 3 })).toEqual([{ property: 'keep', reason: 'keep: unknown property of kubevm:index:BackupPolicy' }]);
    // Values not known yet (a preview) are not refused.
    expect(await bad({ vms: UNKNOWN })).toEqual([]);
    expect(await bad({ vms: undefined, selector: { matchLabels: UNKNOWN } })).toEqual([]);
  });

  test('lifecycle: Check, Create (preview), Create waits for Ready, Diff by update class, Update (preview), Update, Read, Delete', async () => {
    const news = {
      name: 'nightly',
      selector: { matchLabels: { backup: 'nightly' } },
      schedule: '30 2 * * *',
      timeZone: 'Europe/Berlin',
      retention: { keepLast: 7, daily: 7 },
    };
    const { inputs, failures } = await p.check(BP, 'nightly', news);
    expect(failures).toEqual([]);
    expect(inputs).toMatchObject({ name: 'nightly', namespace: 'default', schedule: '30 2 * * *' });

    const preview = await p.create(BP, 'nightly', inputs, { preview: true });
    expect(preview.props).toMatchObject({ uid: UNKNOWN, nextScheduleTime: UNKNOWN, lastResult: UNKNOWN, chains: UNKNOWN });
    expect((await c.request('GET', `${api}/backuppolicies/nightly`)).status).toBe(404);

    const made = await p.create(BP, 'nightly', inputs);
    expect(made.id).toBe('default/nightly');
    const obj = await get(`${api}/backuppolicies/nightly`);
    expect(obj.status.conditions.find((x: any) => x.type === 'Ready')).toMatchObject({ status: 'True' });
    // 02:30 in Berlin is 00:30 or 01:30 UTC.
    expect(made.props.nextScheduleTime).toMatch(/^\d{4}-\d\d-\d\dT0[01]:30:00(\.000)?Z$/);
    expect(made.props).toMatchObject({ uid: obj.metadata.uid, lastScheduleTime: '', lastResult: '', schedule: '30 2 * * *' });
    expect(made.props.chains.map((x: any) => x.vm)).toEqual(['db', 'web']);

    // Diff: identical inputs, a live change, a replacement (the target starts a new chain).
    expect((await p.diff(BP, 'nightly', made.props, inputs, made.id)).changes).toBe(DIFF_NONE);
    const live = await p.diff(BP, 'nightly', made.props, { ...inputs, schedule: '0 3 * * *', paused: true }, made.id);
    expect(live).toMatchObject({ changes: DIFF_SOME, replaces: [], deleteBeforeReplace: false });
    expect(Object.keys(live.detailed).sort()).toEqual(['paused', 'schedule']);
    expect(Object.values(live.detailed).every((k) => !k.endsWith('_REPLACE'))).toBe(true);
    const replace = await p.diff(BP, 'nightly', made.props, { ...inputs, target: { path: '/srv/backups' } }, made.id);
    expect(replace).toMatchObject({
      changes: DIFF_SOME,
      replaces: ['target'],
      deleteBeforeReplace: true,
      detailed: { target: 'ADD_REPLACE' },
    });

    const changed: any = { ...inputs, schedule: '0 3 * * *', vms: ['db'] };
    delete changed.selector;
    const upPreview = await p.update(BP, 'nightly', made.id, made.props, changed, { preview: true });
    expect(upPreview).toMatchObject({ schedule: '0 3 * * *', nextScheduleTime: UNKNOWN });
    expect((await get(`${api}/backuppolicies/nightly`)).spec.schedule).toBe('30 2 * * *');
    const updated = await p.update(BP, 'nightly', made.id, made.props, changed);
    expect(updated).toMatchObject({ schedule: '0 3 * * *', vms: ['db'] });
    expect(updated.selector).toBeUndefined();
    expect(updated.nextScheduleTime).toMatch(/T0[12]:00:00(\.000)?Z$/);
    expect(updated.chains.map((x: any) => x.vm)).toEqual(['db']);

    // Read: what the cluster holds; an untouched policy refreshes to no diff, an out-of-band edit shows.
    const read = await p.read(BP, 'nightly', made.id, updated, changed);
    expect(read.inputs).toEqual(changed);
    expect((await p.diff(BP, 'nightly', read.props, changed, made.id)).changes).toBe(DIFF_NONE);
    await merge(`${api}/backuppolicies/nightly`, { spec: { paused: true } });
    const drifted = await p.read(BP, 'nightly', made.id, updated, changed);
    expect(drifted.inputs.paused).toBe(true);
    expect(Object.keys((await p.diff(BP, 'nightly', drifted.props, changed, made.id)).detailed)).toEqual(['paused']);
    // Import by id: the inputs as the user would write them (server defaults left out).
    const imported = await p.read(BP, 'nightly', made.id);
    expect(imported.inputs).toEqual({ ...changed, paused: true });

    await p.del(BP, 'nightly', made.id, updated);
    expect((await c.request('GET', `${api}/backuppolicies/nightly`)).status).toBe(404);
  });

  test('an invalid schedule reported by the controller fails the create at once with its message', async () => {
    // Check would refuse it; sent anyway (e.g. by an older provider), the wait does not run into its timeout.
    const err = await errorOf(
      p.create(BP, 'broken', { name: 'broken', namespace: 'default', vms: ['db'], schedule: '0 0 30 2 *' }, { timeout: 600 }),
    );
    expect(err.message).toContain(
      'BackupPolicy default/broken to be ready failed: InvalidSchedule: spec.schedule: field "day-of-month" value 30 never occurs in month FEB',
    );
    expect(err.message).not.toContain('timed out');
    await p.del(BP, 'broken', 'default/broken', {});
  });

  test('a policy declared with the provider makes backups on its schedule; listBackups returns them', async () => {
    // Every minute, full every 2 incrementals. The first run comes by the real clock (within a minute).
    const made = await up(BP, 'minutely', { name: 'minutely', vms: ['db'], schedule: '* * * * *', full: { every: 2 } }, 120);
    const first = made.props.nextScheduleTime;
    expect(Date.parse(first) % 60_000).toBe(0);
    const run1 = await eventually(
      async () => {
        const list = (await p.invoke(LIST, { vm: 'db' })).value.backups;
        return list.length === 1 && list[0].phase === 'Succeeded' ? list[0] : undefined;
      },
      90_000,
      'the first scheduled run',
    );
    expect(run1.name).toBe(`minutely-db-${first.replace(/[-:]/g, '').replace('T', '-').slice(0, 15).toLowerCase()}`);
    expect(Date.parse(run1.startTime)).toBeGreaterThanOrEqual(Date.parse(first));
    expect(run1).toMatchObject({ policy: 'minutely', type: 'Full', phase: 'Succeeded' });

    // The next runs: the controller's clock is moved to each next scheduled time (as backup-sim.test.ts does).
    let offset = 0;
    rt.controller.policies.now = () => Date.now() + offset;
    for (let i = 2; i <= 4; i++) {
      const next = Date.parse((await get(`${api}/backuppolicies/minutely`)).status.nextScheduleTime);
      offset = Math.max(offset, next + 1000 - Date.now());
      await merge(`${api}/backuppolicies/minutely`, { metadata: { annotations: { 'test/tick': String(i) } } });
      await eventually(
        async () => {
          const list = (await p.invoke(LIST, { vm: 'db' })).value.backups;
          return list.length === i && list.every((b: any) => b.phase === 'Succeeded') ? true : undefined;
        },
        20_000,
        `run ${i}`,
      );
    }
    const { value, failures } = await p.invoke(LIST, { vm: 'db' });
    expect(failures).toEqual([]);
    const backups = value.backups;
    // full.every 2: F I I F; each point has its disk's checksum and size.
    expect(backups.map((b: any) => [b.type, b.phase])).toEqual([
      ['Full', 'Succeeded'],
      ['Incremental', 'Succeeded'],
      ['Incremental', 'Succeeded'],
      ['Full', 'Succeeded'],
    ]);
    for (const b of backups) {
      expect(b.disks).toEqual([
        { name: 'root', checksum: expect.stringMatching(/^chunked-blake3:[0-9a-f]{64}$/), size: expect.any(Number) },
      ]);
      expect(Date.parse(b.completionTime)).toBeGreaterThanOrEqual(Date.parse(b.startTime));
    }
    const names = backups.map((b: any) => b.name);
    expect([...names].sort()).toEqual(names); // named after their scheduled minutes, in order

    // Read reports the schedule's status as outputs (the tick annotation others added is not drift).
    const read = (await eventually(
      async () => {
        const r = await p.read(BP, 'minutely', made.id, made.props, made.inputs);
        return r.props.chains?.[0]?.points === 4 && r.props.lastResult ? r : undefined;
      },
      10_000,
      'the policy status',
    ))!;
    expect(read.inputs).toEqual(made.inputs);
    expect(read.props).toMatchObject({
      lastResult: 'Succeeded',
      chains: [{ vm: 'db', points: 4, fulls: 2, lastPoint: names[3] }],
    });
    expect(Date.parse(read.props.nextScheduleTime)).toBeGreaterThan(Date.parse(read.props.lastScheduleTime));

    // Other VMs and namespaces have their own lists; bad arguments are failures.
    expect((await p.invoke(LIST, { vm: 'web' })).value).toEqual({ backups: [] });
    expect((await p.invoke(LIST, { vm: 'db', namespace: 'elsewhere' })).value).toEqual({ backups: [] });
    expect((await p.invoke(LIST, {})).failures).toEqual([{ property: 'vm', reason: 'vm: required' }]);
    expect((await p.invoke(LIST, { vm: 'DB' })).failures).toEqual([
      {
        property: 'vm',
        reason: 'vm: value "DB" must be a DNS label (lower-case letters, digits and \'-\', at most 63 characters)',
      },
    ]);

    // Deleting the policy keeps its backups.
    await p.del(BP, 'minutely', made.id, read.props);
    rt.controller.policies.now = () => Date.now();
    expect((await p.invoke(LIST, { vm: 'db' })).value.backups.map((b: any) => b.name)).toEqual(names);
  }, 180_000);
});

describe('a Filesystem Volume as the backup target', () => {
  test('Check names the field; the volume is created unplaced, the policy places it on the VM\'s node and fills it', async () => {
    const volFailures = async (news: any) => (await p.check(VOL, 'repo', { name: 'repo', ...news })).failures;
    expect(await volFailures({ volumeMode: 'Filesystem' })).toEqual([{ property: 'size', reason: 'size: required for a Filesystem volume (its capacity)' }]);
    expect(await volFailures({ volumeMode: 'Filesystem', size: '1Gi', source: { image: { path: '/images/a.qcow2' } } })).toEqual([
      { property: 'source', reason: 'source.image: a Filesystem volume is an empty directory; sources apply to Block volumes' },
    ]);
    expect(await volFailures({ volumeMode: 'Directory', size: '1Gi' })).toEqual([expect.objectContaining({ property: 'volumeMode' })]);
    const bpFailures = (await p.check(BP, 'both', { name: 'both', vms: ['web'], schedule: '@daily', target: { path: '/tmp/b', volume: 'repo' } })).failures;
    expect(bpFailures).toContainEqual({ property: 'target', reason: 'target: set path (a directory on the node) or volume (a Filesystem Volume), not both' });

    // Created while nobody targets it yet: done, unplaced.
    const repo = await up(VOL, 'repo', { name: 'repo', volumeMode: 'Filesystem', size: '256Mi' }, 60);
    expect(repo.props).toMatchObject({ phase: 'Pending', node: '' });
    const pol = await up(BP, 'to-repo', { name: 'to-repo', vms: ['web'], schedule: '0 3 * * *', target: { volume: 'repo' } }, 60);
    // Run it now: the controller's clock moves to the next scheduled time.
    const next = Date.parse(pol.props.nextScheduleTime);
    rt.controller.policies.now = () => Date.now() + (next + 1000 - Date.now());
    await merge(`${api}/backuppolicies/to-repo`, { metadata: { annotations: { 'test/tick': '1' } } });
    const run = await eventually(
      async () => {
        const list = (await p.invoke(LIST, { vm: 'web' })).value.backups.filter((b: any) => b.policy === 'to-repo');
        return list.length === 1 && list[0].phase === 'Succeeded' ? list[0] : undefined;
      },
      20_000,
      'the run into the volume',
    );
    rt.controller.policies.now = () => Date.now();
    const web = await get(`${api}/virtualmachines/web`);
    const read = (await eventually(
      async () => {
        const r = await p.read(VOL, 'repo', repo.id, repo.props, repo.inputs);
        return r.props.phase === 'Ready' && r.props.actualSize > 0 ? r : undefined;
      },
      10_000,
      'repo placed and used',
    ))!;
    expect(read.props).toMatchObject({ node: web.status.node, virtualSize: 256 * 1024 * 1024 });
    expect(read.inputs).toEqual(repo.inputs); // placement and usage are not drift
    const b = await get(`${api}/backups/${run.name}`);
    expect(b.status.disks[0].manifest.startsWith(`${read.props.path}/${ns}/web/to-repo/root/`)).toBe(true);
    expect(fs.existsSync(b.status.disks[0].manifest)).toBe(true);

    // Deleting the policy keeps the backup (and so the volume); without the backup the volume goes with its directory.
    await p.del(BP, 'to-repo', pol.id, pol.props);
    expect((await c.request('DELETE', `${api}/backups/${run.name}`)).status).toBe(200);
    await eventually(async () => ((await c.request('GET', `${api}/backups/${run.name}`)).status === 404 ? true : undefined), 10_000, 'backup gone');
    await p.del(VOL, 'repo', repo.id, read.props);
    expect(fs.existsSync(read.props.path)).toBe(false);
  }, 60_000);
});

describe('Volume source.fromBackup', () => {
  test('Check accepts it without a size and refuses two sources; Create waits until the point is restored and verified', async () => {
    const [first] = (await p.invoke(LIST, { vm: 'db' })).value.backups;
    expect((await p.check(VOL, 'copy', { name: 'copy', source: { fromBackup: { backup: first.name } } })).failures).toEqual([]);
    expect(
      (await p.check(VOL, 'copy', { name: 'copy', size: '16Mi', source: { blank: {}, fromBackup: { backup: first.name } } }))
        .failures,
    ).toEqual([
      { property: 'source', reason: 'source: set exactly one of blank, image, clone, fromBackup (got blank, fromBackup)' },
    ]);
    expect((await p.check(VOL, 'copy', { name: 'copy', source: { fromBackup: { disk: 'root' } } })).failures).toEqual([
      { property: 'source.fromBackup.backup', reason: 'source.fromBackup.backup: required' },
    ]);

    const made = await up(VOL, 'copy', { name: 'copy', source: { fromBackup: { backup: first.name, disk: 'root' } } }, 60);
    expect(made.props).toMatchObject({ phase: 'Ready', node: 'node-0' });
    const v = await get(`${api}/volumes/copy`);
    expect(v.status.phase).toBe('Ready');
    expect(v.spec.source.fromBackup).toEqual({ backup: first.name, disk: 'root' });
    // Another point is another Volume: a replacement.
    const d = await p.diff(
      VOL,
      'copy',
      made.props,
      { ...made.inputs, source: { fromBackup: { backup: 'other', disk: 'root' } } },
      made.id,
    );
    expect(d).toMatchObject({ changes: DIFF_SOME, replaces: ['source'], deleteBeforeReplace: true });
    const read = await p.read(VOL, 'copy', made.id, made.props, made.inputs);
    expect(read.inputs).toEqual(made.inputs);
    await p.del(VOL, 'copy', made.id, made.props);
  });
});

describe('through the local engine: a Pulumi program declares the policy and lists the backups', () => {
  let dir: string;
  let opts: EngineOptions;
  const lines: string[] = [];

  beforeAll(() => {
    dir = tempDir();
    fs.writeFileSync(path.join(dir, 'Pulumi.yaml'), 'name: backups\nruntime: nodejs\n');
    fs.writeFileSync(
      path.join(dir, 'index.ts'),
      `import * as kubevm from '@kubevm/pulumi';

const policy = new kubevm.BackupPolicy('web-backups', {
  vms: ['web'],
  schedule: '*/10 * * * *',
  full: { every: 6 },
  retention: { keepLast: 12, daily: 7 },
});
export const policyName = policy.name;
export const next = policy.nextScheduleTime;
export const backups = kubevm.listBackupsOutput({ vm: 'web' }).backups.apply((bs) => bs.map((b) => \`\${b.name} \${b.type} \${b.phase} \${b.disks.length}\`));
`,
    );
    opts = { programDir: dir, statePath: path.join(dir, 'state.json'), kubeconfig: c.kubeconfigPath, out: (l) => lines.push(l) };
  });

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('up creates the policy (Ready, next run known); a run later, the same program lists it and changes nothing; destroy keeps the backups', async () => {
    const r = await runEngine('up', opts);
    expect([r.errors, lines.filter((l) => /error/i.test(l))]).toEqual([[], []]);
    expect(r.steps.map((s) => `${s.op} ${s.name}`)).toEqual(['create web-backups']);
    const name = String(r.outputs.policyName);
    expect(name).toMatch(/^web-backups-[a-z0-9]{8}$/);
    expect(Date.parse(String(r.outputs.next)) % 600_000).toBe(0);
    expect(r.outputs.backups).toEqual([]);
    const policy = await get(`${api}/backuppolicies/${name}`);
    expect(policy.spec).toMatchObject({ vms: ['web'], schedule: '*/10 * * * *' });

    // The next scheduled time comes (the controller's clock is moved there): a Full backup of web.
    rt.controller.policies.now = () => Date.parse(String(r.outputs.next)) + 1000;
    await merge(`${api}/backuppolicies/${name}`, { metadata: { annotations: { 'test/tick': 'engine' } } });
    const made = await eventually(
      async () => {
        const items = (await get(`${api}/backups?labelSelector=kubevm.dev/backup-policy%3D${name}`)).items;
        return items.length === 1 && items[0].status?.phase === 'Succeeded' ? items[0] : undefined;
      },
      20_000,
      'the scheduled run',
    );
    rt.controller.policies.now = () => Date.now();

    const again = await runEngine('up', opts);
    expect(again.errors).toEqual([]);
    expect(again.steps.map((s) => `${s.op} ${s.name}`)).toEqual(['same web-backups']);
    expect(again.outputs.backups).toEqual([`${made.metadata.name} Full Succeeded 1`]);

    const d = await runEngine('destroy', opts);
    expect(d.errors).toEqual([]);
    expect((await c.request('GET', `${api}/backuppolicies/${name}`)).status).toBe(404);
    expect((await c.request('GET', `${api}/backups/${made.metadata.name}`)).status).toBe(200);
  }, 180_000);
});
