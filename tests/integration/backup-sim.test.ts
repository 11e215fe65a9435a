import * as fs from 'node:fs';
import { startTestCluster, TestCluster, eventually, kubevmApi } from '../helpers/cluster';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import type { SimBackend } from '../../controller/hal';

/**
 * Backups, policies and restores through the real API server, the controller
 * and two node agents on the sim backend (the same HAL backup contract as qemu,
 * without images: see tests/integration/hal-backup.test.ts and
 * tests/e2e/backup-qemu.test.ts for the data path on real disks). What this
 * shows: the Backup lifecycle and chain bookkeeping, schedules driven by a
 * simulated clock, retention that never breaks a chain, protection of points
 * others build on, restores into a new Volume and in place, the one-at-a-time
 * rule, and an agent restart in the middle of a backup.
 */
let c: TestCluster;
let rt: Runtime;
const ns = 'default';
const { api, get, post, merge } = kubevmApi(() => c, ns);

async function vm(name: string, spec: any = {}): Promise<void> {
  await post('volumes', { kind: 'Volume', metadata: { name: `${name}-root` }, spec: { size: '16Mi', source: { blank: {} } } });
  await post('virtualmachines', {
    kind: 'VirtualMachine',
    metadata: { name, labels: { tier: 'db' } },
    spec: { backend: 'sim', memory: '64Mi', disks: [{ name: 'root', volume: `${name}-root` }], ...spec },
  });
}

async function running(name: string): Promise<any> {
  return eventually(async () => {
    const v = await get(`${api}/virtualmachines/${name}`);
    return v.status?.printableStatus === 'Running' && v.status?.ready ? v : undefined;
  }, 20_000, `${name} running`);
}

async function backup(name: string, spec: any): Promise<any> {
  await post('backups', { kind: 'Backup', metadata: { name }, spec });
  return finished('backups', name);
}

async function finished(kind: string, name: string, timeoutMs = 20_000): Promise<any> {
  return eventually(async () => {
    const b = await get(`${api}/${kind}/${name}`);
    return ['Succeeded', 'Failed'].includes(b.status?.phase) ? b : undefined;
  }, timeoutMs, `${kind}/${name} to finish`);
}

function simOf(node: string): SimBackend {
  return rt.agents.find((a) => a.nodeName === node)!['opts'].backend as SimBackend;
}

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startSimRuntime(c, { nodes: 2, nodeCapacity: { cpu: 32, memoryBytes: 64 * 1024 ** 3 }, sim: { delays: { startMs: 20, guestReadyMs: 50, stopMs: 20, jitter: 0, backupMs: 400 } } });
}, 60_000);

afterAll(async () => {
  await rt?.stop();
  await c?.cleanup();
});

test('an on-demand Full then Incremental of a running VM: points, checksums, chain and labels', async () => {
  await vm('alpha');
  const v = await running('alpha');
  const full = await backup('alpha-1', { vm: 'alpha', type: 'Incremental' });
  expect(full.status).toMatchObject({ phase: 'Succeeded', type: 'Full', reason: 'NoBase', online: true, node: v.status.node });
  expect(full.metadata.labels).toMatchObject({ 'kubevm.dev/vm': 'alpha' });
  expect(full.metadata.finalizers).toContain('kubevm.dev/backup-files');
  const [d1] = full.status.disks;
  expect(d1).toMatchObject({ name: 'root', volume: 'alpha-root' });
  expect(d1.checksum).toMatch(/^chunked-blake3:[0-9a-f]{64}$/);
  expect(fs.existsSync(d1.manifest)).toBe(true);
  expect((full.status.conditions ?? []).find((x: any) => x.type === 'Complete')?.status).toBe('True');

  // The guest writes: the next point has new content and builds on the first.
  simOf(v.status.node).writeDisk(v.status.instanceUID, 'root');
  const inc = await backup('alpha-2', { vm: 'alpha' });
  expect(inc.status).toMatchObject({ phase: 'Succeeded', type: 'Incremental' });
  expect(inc.status.disks[0]).toMatchObject({ base: 'alpha-1', baseManifest: d1.manifest });
  expect(inc.status.disks[0].checksum).not.toBe(d1.checksum);
  // Unchanged disk: same content, same checksum.
  const inc2 = await backup('alpha-3', { vm: 'alpha' });
  expect(inc2.status.disks[0].checksum).toBe(inc.status.disks[0].checksum);
  expect(inc2.status.disks[0].base).toBe('alpha-2');
});

test('bad Backups fail with the field and the rule', async () => {
  const missing = await backup('ghost-1', { vm: 'ghost' });
  expect(missing.status).toMatchObject({ phase: 'Failed', reason: 'VirtualMachineNotFound' });
  expect(missing.status.message).toContain('spec.vm: VirtualMachine default/ghost not found');
  const disk = await backup('alpha-bad', { vm: 'alpha', disks: ['nope'] });
  expect(disk.status.phase).toBe('Failed');
  expect(disk.status.message).toContain('spec.disks[0]: VirtualMachine alpha has no disk "nope"');
  const r = await c.request('POST', `${api}/backups`, { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Backup', metadata: { name: 'x' }, spec: { vm: 'alpha', type: 'Sometimes' } });
  expect(r.status).toBe(422);
  expect(r.text).toContain('spec.type');
});

test('a point another backup builds on cannot be deleted before it; deleting in order removes the files', async () => {
  const base = await get(`${api}/backups/alpha-2`);
  const files = [base.status.disks[0].manifest];
  expect((await c.request('DELETE', `${api}/backups/alpha-2`)).status).toBe(200);
  const blocked = await eventually(async () => {
    const b = await get(`${api}/backups/alpha-2`);
    return (b.status?.conditions ?? []).find((x: any) => x.type === 'DeletionBlocked') ? b : undefined;
  }, 10_000, 'DeletionBlocked');
  expect(blocked.status.conditions.find((x: any) => x.type === 'DeletionBlocked').message).toContain('Backup alpha-3');
  expect(fs.existsSync(files[0])).toBe(true);
  // alpha-3 goes first; then alpha-2 follows by itself.
  expect((await c.request('DELETE', `${api}/backups/alpha-3`)).status).toBe(200);
  await eventually(async () => ((await c.request('GET', `${api}/backups/alpha-2`)).status === 404 ? true : undefined), 15_000, 'alpha-2 gone');
  expect(fs.existsSync(files[0])).toBe(false);
});

test('restore into a new Volume verifies the point; in place is refused while the VM runs and works once it is stopped', async () => {
  const point = (await get(`${api}/backups/alpha-1`)).status.disks[0];
  await post('restores', { kind: 'Restore', metadata: { name: 'r1' }, spec: { backup: 'alpha-1', volume: 'alpha-copy' } });
  const r1 = await finished('restores', 'r1');
  expect(r1.status).toMatchObject({ phase: 'Succeeded', volume: 'alpha-copy', checksum: point.checksum });
  const vol = await get(`${api}/volumes/alpha-copy`);
  expect(vol.status.phase).toBe('Ready');
  expect(vol.spec.source.fromBackup).toEqual({ backup: 'alpha-1', disk: 'root' });
  expect(vol.status.nodeName).toBe((await get(`${api}/backups/alpha-1`)).status.node);

  await post('restores', { kind: 'Restore', metadata: { name: 'r2' }, spec: { backup: 'alpha-1', inPlace: true } });
  const r2 = await finished('restores', 'r2');
  expect(r2.status.phase).toBe('Failed');
  expect(r2.status.message).toMatch(/VirtualMachine alpha is running .*stop it first/);

  await merge(`${api}/virtualmachines/alpha`, { spec: { runStrategy: 'Halted' } });
  await eventually(async () => ((await get(`${api}/virtualmachines/alpha`)).status?.printableStatus === 'Stopped' ? true : undefined), 15_000, 'alpha stopped');
  await post('restores', { kind: 'Restore', metadata: { name: 'r3' }, spec: { backup: 'alpha-1', inPlace: true } });
  const r3 = await finished('restores', 'r3');
  expect(r3.status.message).toBe("restored and verified");
  expect(r3.status).toMatchObject({ phase: 'Succeeded', checksum: point.checksum, volume: 'alpha-root' });

  // A stopped VM is backed up offline (KubeVirt cannot); the restored disk has no bitmap, so it is Full.
  const off = await backup('alpha-4', { vm: 'alpha' });
  expect(off.status).toMatchObject({ phase: 'Succeeded', online: false, type: 'Full' });
  // (The sim models content per disk path, not per file: the data-level round trip is in tests/e2e/backup-qemu.test.ts.)

  const bad = await c.request('POST', `${api}/restores`, { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Restore', metadata: { name: 'r4' }, spec: { backup: 'alpha-1', volume: 'alpha-copy' } });
  expect(bad.status).toBe(201);
  expect((await finished('restores', 'r4')).status.message).toContain('spec.volume: Volume alpha-copy already exists');
});

test('a policy runs on its schedule, picks Full every N, keeps the last N without breaking chains', async () => {
  await vm('beta');
  await running('beta');
  const policies = rt.controller.policies;
  let clock = Date.now();
  policies.now = () => clock;
  await post('backuppolicies', {
    kind: 'BackupPolicy',
    metadata: { name: 'hourly' },
    spec: { selector: { matchLabels: { tier: 'db' } }, vms: ['beta'], schedule: '@hourly', retention: { keepLast: 3 }, full: { every: 2 } },
  });
  // alpha (label tier=db, stopped) and beta are selected.
  const p0 = await eventually(async () => {
    const p = await get(`${api}/backuppolicies/hourly`);
    return p.status?.nextScheduleTime ? p : undefined;
  }, 10_000, 'policy scheduled');
  expect(p0.status.conditions.find((x: any) => x.type === 'Ready').status).toBe('True');
  const runs: string[] = [];
  for (let i = 0; i < 6; i++) {
    // Let the controller's cache see the previous run's result before the next tick.
    await new Promise((r) => setTimeout(r, 300));
    clock = Date.parse((await get(`${api}/backuppolicies/hourly`)).status.nextScheduleTime) + 1000;
    await merge(`${api}/backuppolicies/hourly`, { metadata: { annotations: { tick: String(i) } } });
    const run = await eventually(async () => {
      const list = (await get(`${api}/backups?labelSelector=kubevm.dev/vm%3Dbeta,kubevm.dev/backup-policy%3Dhourly`)).items;
      const mine = list.filter((b: any) => !runs.includes(b.metadata.name));
      return mine.length === 1 && ['Succeeded', 'Failed'].includes(mine[0].status?.phase) ? mine[0] : undefined;
    }, 15_000, `run ${i}`);
    runs.push(run.metadata.name);
    expect(run.status.phase).toBe('Succeeded');
    // full.every 2: F I I F I I
    expect([i, run.status.type]).toEqual([i, i % 3 === 0 ? 'Full' : 'Incremental']);
  }
  // Retention keepLast 3 keeps runs 3-5 (run 3 is their Full); the older chain is gone.
  const left = await eventually(async () => {
    const items = (await get(`${api}/backups?labelSelector=kubevm.dev/vm%3Dbeta`)).items.filter((b: any) => !b.metadata.deletionTimestamp);
    return items.length === 3 ? items : undefined;
  }, 15_000, 'retention');
  expect(left.map((b: any) => b.metadata.name).sort()).toEqual(runs.slice(3).sort());
  const p = await eventually(async () => {
    const x = await get(`${api}/backuppolicies/hourly`);
    return x.status?.lastResult && x.status.chains?.find((ch: any) => ch.vm === 'beta')?.points === 3 ? x : undefined;
  }, 10_000, 'policy status');
  expect(p.status.chains.find((ch: any) => ch.vm === 'beta')).toMatchObject({ points: 3, fulls: 1, lastPoint: runs[5] });
  expect(p.status.chains.find((ch: any) => ch.vm === 'alpha')).toBeDefined();
  // Runs are named after their scheduled time: replaying the same tick makes nothing new.
  const before = (await get(`${api}/backups`)).items.length;
  await merge(`${api}/backuppolicies/hourly`, { metadata: { annotations: { tick: 'again' } } });
  await new Promise((r) => setTimeout(r, 500));
  expect((await get(`${api}/backups`)).items.length).toBe(before);
  // Paused: no next run.
  await merge(`${api}/backuppolicies/hourly`, { spec: { paused: true } });
  await eventually(async () => ((await get(`${api}/backuppolicies/hourly`)).status?.nextScheduleTime ? undefined : true), 10_000, 'paused');
});

test('an invalid schedule is reported on the policy, naming the field and the rule', async () => {
  await post('backuppolicies', { kind: 'BackupPolicy', metadata: { name: 'broken' }, spec: { vms: ['beta'], schedule: '0 25 * * *' } });
  const p = await eventually(async () => {
    const x = await get(`${api}/backuppolicies/broken`);
    return x.status?.conditions?.find((k: any) => k.type === 'Ready') ? x : undefined;
  }, 10_000, 'condition');
  const ready = p.status.conditions.find((k: any) => k.type === 'Ready');
  expect(ready).toMatchObject({ status: 'False', reason: 'InvalidSchedule' });
  expect(ready.message).toBe('spec.schedule: field "hour" value 25 is out of range 0-23');
});

test('an agent restart during a backup fails it as Interrupted, leaves no point, and the next one builds on the last good point', async () => {
  await vm('gamma');
  const v = await running('gamma');
  await backup('gamma-1', { vm: 'gamma' });
  await post('backups', { kind: 'Backup', metadata: { name: 'gamma-2' }, spec: { vm: 'gamma' } });
  await eventually(async () => ((await get(`${api}/backups/gamma-2`)).status?.phase === 'Running' ? true : undefined), 10_000, 'gamma-2 running');
  await rt.restartAgent(v.status.node);
  const b2 = await finished('backups', 'gamma-2');
  expect(b2.status).toMatchObject({ phase: 'Failed', reason: 'Interrupted' });
  for (const d of b2.status.disks ?? []) expect(fs.existsSync(d.manifest)).toBe(false);
  const b3 = await backup('gamma-3', { vm: 'gamma' });
  expect(b3.status).toMatchObject({ phase: 'Succeeded', type: 'Incremental' });
  expect(b3.status.disks[0].base).toBe('gamma-1');
});

test('one backup per VM at a time: a second waits for the first', async () => {
  await post('backups', { kind: 'Backup', metadata: { name: 'gamma-4' }, spec: { vm: 'gamma', type: 'Full' } });
  await post('backups', { kind: 'Backup', metadata: { name: 'gamma-5' }, spec: { vm: 'gamma' } });
  const [b4, b5] = [await finished('backups', 'gamma-4'), await finished('backups', 'gamma-5')];
  expect(b4.status.phase).toBe('Succeeded');
  expect(b5.status.phase).toBe('Succeeded');
  const [s4, e4, s5] = [Date.parse(b4.status.startTime), Date.parse(b4.status.completionTime), Date.parse(b5.status.startTime)];
  expect(s5).toBeGreaterThanOrEqual(e4 - 1000); // second-precision times
  expect(s4).toBeLessThanOrEqual(s5);
  expect(b5.status.disks[0].base).toBe('gamma-4');
});

test('a backup waits for a live migration of its VM, then runs online on the node the VM moved to', async () => {
  // 2 GiB of guest memory: the sim's migration takes about 2.3 s.
  await vm('delta', { memory: '2Gi' });
  const v = await running('delta');
  await backup('delta-1', { vm: 'delta' });
  await post('migrations', { kind: 'Migration', metadata: { name: 'delta-move' }, spec: { vm: 'delta' } });
  await eventually(async () => (['PreparingTarget', 'TargetReady', 'Running'].includes((await get(`${api}/migrations/delta-move`)).status?.phase) ? true : undefined), 10_000, 'migrating');
  await post('backups', { kind: 'Backup', metadata: { name: 'delta-2' }, spec: { vm: 'delta' } });
  const waiting = await eventually(async () => {
    const b = await get(`${api}/backups/delta-2`);
    return b.status?.message?.includes('Migration delta-move') ? b : undefined;
  }, 10_000, 'delta-2 waits for the migration');
  expect(waiting.status.phase).toBeUndefined();
  const m = await finished('migrations', 'delta-move');
  expect(m.status.phase).toBe('Succeeded');
  expect(m.status.targetNode).not.toBe(v.status.node);
  // Where the instance runs now, through its backend: online, not an offline copy of a running VM's disk.
  const b2 = await finished('backups', 'delta-2');
  expect(b2.status).toMatchObject({ phase: 'Succeeded', online: true, node: m.status.targetNode });
  expect(Date.parse(b2.status.startTime)).toBeGreaterThanOrEqual(Date.parse(m.status.endTime) - 1000);
  expect(fs.existsSync(b2.status.disks[0].manifest)).toBe(true);
});

test('a Volume restored from a backup waits for the backup to succeed, and fails naming the field when it cannot', async () => {
  await post('volumes', { kind: 'Volume', metadata: { name: 'from-ghost' }, spec: { source: { fromBackup: { backup: 'no-such-backup' } } } });
  const ghost = await eventually(async () => {
    const v = await get(`${api}/volumes/from-ghost`);
    return v.status?.phase === 'Failed' ? v : undefined;
  }, 10_000, 'from-ghost Failed');
  expect(ghost.status.message).toBe('source.fromBackup.backup: Backup default/no-such-backup not found');

  await post('backups', { kind: 'Backup', metadata: { name: 'gamma-slow' }, spec: { vm: 'gamma', type: 'Full' } });
  await post('volumes', { kind: 'Volume', metadata: { name: 'from-slow' }, spec: { source: { fromBackup: { backup: 'gamma-slow' } } } });
  const waiting = await eventually(async () => {
    const v = await get(`${api}/volumes/from-slow`);
    return v.status?.message === 'waiting for Backup gamma-slow to succeed' ? v : undefined;
  }, 10_000, 'from-slow waits');
  expect(waiting.status.phase).toBe('Pending');
  const ready = await eventually(async () => {
    const v = await get(`${api}/volumes/from-slow`);
    return v.status?.phase === 'Ready' ? v : undefined;
  }, 20_000, 'from-slow Ready');
  expect(ready.status.nodeName).toBe((await get(`${api}/backups/gamma-slow`)).status.node);
});

test('two chains of one VM (a policy and on-demand backups) keep their own bitmaps: each stays incremental', async () => {
  await vm('eps');
  await running('eps');
  expect((await backup('eps-d1', { vm: 'eps' })).status.type).toBe('Full');
  expect((await backup('eps-p1', { vm: 'eps', policy: 'nightly' })).status.type).toBe('Full');
  const d2 = await backup('eps-d2', { vm: 'eps' });
  expect(d2.status).toMatchObject({ phase: 'Succeeded', type: 'Incremental' });
  expect(d2.status.disks[0].base).toBe('eps-d1');
  const p2 = await backup('eps-p2', { vm: 'eps', policy: 'nightly' });
  expect(p2.status).toMatchObject({ phase: 'Succeeded', type: 'Incremental' });
  expect(p2.status.disks[0].base).toBe('eps-p1');
  expect(p2.status.disks[0].manifest).toContain('/eps/nightly/root/');
  expect(d2.status.disks[0].manifest).toContain('/eps/on-demand/root/');
});

test('a Filesystem Volume as the target: placed by its first Backup, refuses a VM on another node, a Block volume and a full volume, and is kept while it holds points', async () => {
  await post('volumes', { kind: 'Volume', metadata: { name: 'repo' }, spec: { volumeMode: 'Filesystem', size: '64Mi' } });
  await eventually(async () => {
    const v = await get(`${api}/volumes/repo`);
    return v.status?.phase === 'Pending' && /first Backup that targets it/.test(v.status.message) && !v.status.nodeName ? v : undefined;
  }, 10_000, 'repo unplaced, waiting for its first Backup');
  await vm('fsa');
  const a = await running('fsa');
  const b1 = await backup('fsa-1', { vm: 'fsa', type: 'Full', target: { volume: 'repo' } });
  expect(b1.status).toMatchObject({ phase: 'Succeeded', type: 'Full', node: a.status.node });
  const b2 = await backup('fsa-2', { vm: 'fsa', target: { volume: 'repo' } });
  expect(b2.status).toMatchObject({ phase: 'Succeeded', type: 'Incremental', disks: [expect.objectContaining({ base: 'fsa-1' })] });
  const repo = await eventually(async () => {
    const v = await get(`${api}/volumes/repo`);
    return v.status?.phase === 'Ready' && v.status.actualSize > 0 && v.status.usedBy?.length === 2 ? v : undefined;
  }, 10_000, 'repo Ready with its usage');
  expect(repo.status).toMatchObject({ nodeName: a.status.node, virtualSize: 64 * 1024 * 1024, usedBy: ['Backup/fsa-1', 'Backup/fsa-2'] });
  for (const b of [b1, b2]) {
    expect(b.status.disks[0].manifest.startsWith(`${repo.status.path}/${ns}/fsa/on-demand/root/`)).toBe(true);
    expect(fs.existsSync(b.status.disks[0].manifest)).toBe(true);
  }

  // A VM on the other node cannot write into it (node-local storage).
  const other = rt.agents.map((x) => x.nodeName).find((n) => n !== a.status.node)!;
  await post('volumes', { kind: 'Volume', metadata: { name: 'fsb-root' }, spec: { size: '16Mi', nodeName: other, source: { blank: {} } } });
  await post('virtualmachines', { kind: 'VirtualMachine', metadata: { name: 'fsb' }, spec: { backend: 'sim', memory: '64Mi', disks: [{ name: 'root', volume: 'fsb-root' }] } });
  expect((await running('fsb')).status.node).toBe(other);
  const bx = await backup('fsb-1', { vm: 'fsb', type: 'Full', target: { volume: 'repo' } });
  expect(bx.status).toMatchObject({ phase: 'Failed', reason: 'InvalidSpec' });
  expect(bx.status.message).toBe(
    `spec.target.volume: Volume repo is on node ${a.status.node}, but VirtualMachine fsb is backed up on node ${other} (node-local storage: the target must be on the node that writes the points)`,
  );
  // A disk image is no target, a directory is no disk, and path and volume exclude each other.
  const by = await backup('fsa-x', { vm: 'fsa', type: 'Full', target: { volume: 'fsa-root' } });
  expect(by.status.message).toMatch(/^spec\.target\.volume: Volume fsa-root has volumeMode Block \(a disk image\); backups need a Filesystem volume$/);
  const both = await c.request('POST', `${api}/backups`, { apiVersion: 'kubevm.dev/v1alpha1', kind: 'Backup', metadata: { name: 'fsa-y' }, spec: { vm: 'fsa', target: { path: '/tmp', volume: 'repo' } } });
  expect(both.status).toBe(422);
  expect(both.text).toContain('spec.target');
  await post('virtualmachines', { kind: 'VirtualMachine', metadata: { name: 'fsc' }, spec: { backend: 'sim', memory: '64Mi', disks: [{ name: 'root', volume: 'repo' }] } });
  await eventually(async () => {
    const v = await get(`${api}/virtualmachines/fsc`);
    return JSON.stringify(v.status ?? {}).includes('disk root: Volume repo has volumeMode Filesystem (a directory for backups); VM disks need a Block volume') ? v : undefined;
  }, 10_000, 'fsc refused its Filesystem disk');

  // Capacity: a Full that would not fit is refused before anything is written.
  await post('volumes', { kind: 'Volume', metadata: { name: 'tiny' }, spec: { volumeMode: 'Filesystem', size: '8Ki', nodeName: a.status.node } });
  const bt = await backup('fsa-t', { vm: 'fsa', type: 'Full', target: { volume: 'tiny' } });
  expect(bt.status).toMatchObject({ phase: 'Failed', reason: 'TargetFull' });
  expect(bt.status.message).toMatch(/^spec\.target\.volume: Volume tiny holds 0 KiB of its 8 KiB \(spec\.size\); this Full backup needs about \d+ KiB more \(the disks' allocated data\): delete Backups, tighten the policy's retention, or use a larger volume$/);
  expect(fs.readdirSync((await get(`${api}/volumes/tiny`)).status.path)).toEqual([]);
  // An incremental cannot be sized beforehand: one that overfills the volume succeeds with a warning, and the
  // next backup into the full volume is refused. (The padding stands for anything else that filled it.)
  await post('volumes', { kind: 'Volume', metadata: { name: 'snug' }, spec: { volumeMode: 'Filesystem', size: '1Mi', nodeName: a.status.node } });
  expect((await backup('fsa-s1', { vm: 'fsa', type: 'Full', target: { volume: 'snug' } })).status.phase).toBe('Succeeded');
  const snug = await eventually(async () => {
    const v = await get(`${api}/volumes/snug`);
    return v.status?.actualSize > 0 ? v : undefined;
  }, 10_000, 'snug usage');
  fs.writeFileSync(`${snug.status.path}/padding`, Buffer.alloc(1024 * 1024 - snug.status.actualSize - 4096, 1));
  const over = await backup('fsa-s2', { vm: 'fsa', target: { volume: 'snug' } });
  expect(over.status).toMatchObject({ phase: 'Succeeded', type: 'Incremental' });
  const warned = await eventually(async () => {
    const ev = (await get('/api/v1/namespaces/default/events')).items.find((e: any) => e.involvedObject.name === 'fsa-s2' && e.reason === 'TargetOverCapacity');
    return ev;
  }, 10_000, 'the TargetOverCapacity event');
  expect(warned.message).toMatch(/^Volume snug now holds 10\d\d KiB of its 1024 KiB: the next backups to it are refused until retention or deletions free space$/);
  const refused = await backup('fsa-s3', { vm: 'fsa', target: { volume: 'snug' } });
  expect(refused.status).toMatchObject({ phase: 'Failed', reason: 'TargetFull' });
  expect(refused.status.message).toMatch(/^spec\.target\.volume: Volume snug holds 10\d\d KiB of its 1024 KiB \(spec\.size\); it is full: /);

  // Deleting the volume waits for the Backups whose points it holds; then its directory goes.
  expect((await c.request('DELETE', `${api}/volumes/repo`)).status).toBe(200);
  await eventually(async () => {
    const v = await get(`${api}/volumes/repo`);
    const blocked = (v.status?.conditions ?? []).find((x: any) => x.type === 'DeletionBlocked');
    return blocked?.message === 'deletion waits: holds the points of Backup fsa-1, Backup fsa-2 (delete those Backups, or their BackupPolicy, first)' ? v : undefined;
  }, 10_000, 'repo deletion blocked by its backups');
  expect(fs.existsSync(repo.status.path)).toBe(true);
  await c.request('DELETE', `${api}/backups/fsa-2`);
  await c.request('DELETE', `${api}/backups/fsa-1`);
  await eventually(async () => ((await c.request('GET', `${api}/volumes/repo`)).status === 404 ? true : undefined), 20_000, 'repo deleted');
  expect(fs.existsSync(repo.status.path)).toBe(false);
});

test('retention with mergeIncrementals keeps exactly the selected points: older ones are folded into the oldest kept point, which restores', async () => {
  await vm('zeta');
  await running('zeta');
  const policies = rt.controller.policies;
  let clock = Date.now();
  policies.now = () => clock;
  await post('backuppolicies', {
    kind: 'BackupPolicy',
    metadata: { name: 'folding' },
    spec: { vms: ['zeta'], schedule: '@hourly', full: { every: 100 }, retention: { keepLast: 2, mergeIncrementals: true }, bandwidthMiBps: 64 },
  });
  await eventually(async () => ((await get(`${api}/backuppolicies/folding`)).status?.nextScheduleTime ? true : undefined), 10_000, 'scheduled');
  const live = async () =>
    (await get(`${api}/backups?labelSelector=kubevm.dev/vm%3Dzeta,kubevm.dev/backup-policy%3Dfolding`)).items
      .filter((b: any) => !b.metadata.deletionTimestamp)
      .sort((a: any, b: any) => (a.metadata.name < b.metadata.name ? -1 : 1));
  const runs: string[] = [];
  for (let i = 0; i < 5; i++) {
    // The next scheduled time after the previous run (the policy's status may lag behind a busy controller).
    const nextRun = await eventually(async () => {
      const n = Date.parse((await get(`${api}/backuppolicies/folding`)).status?.nextScheduleTime);
      return n > clock ? n : undefined;
    }, 15_000, `the policy's next run after run ${i - 1}`);
    clock = nextRun! + 1000;
    await merge(`${api}/backuppolicies/folding`, { metadata: { annotations: { tick: String(i) } } });
    const run = await eventually(async () => {
      const mine = (await get(`${api}/backups?labelSelector=kubevm.dev/vm%3Dzeta`)).items.filter((b: any) => !runs.includes(b.metadata.name));
      return mine.length === 1 && mine[0].status?.phase === 'Succeeded' ? mine[0] : undefined;
    }, 15_000, `run ${i}`);
    runs.push(run.metadata.name);
    expect(run.spec.bandwidthMiBps).toBe(64); // the policy's limit goes to each run
    // Every run but the first is an incremental (full.every 100).
    expect([i, run.status.type]).toEqual([i, i === 0 ? 'Full' : 'Incremental']);
    if (i < 2) continue;
    // keepLast 2: the older kept point absorbed everything before it and is self-contained; the newer builds on it.
    const [older, newer] = await eventually(async () => {
      const l = await live();
      return l.length === 2 && l[0].status?.type === 'Full' && l[0].status?.mergedFrom?.includes(runs[i - 2]) ? l : undefined;
    }, 20_000, `merge after run ${i}`);
    expect([older.metadata.name, newer.metadata.name]).toEqual([runs[i - 1], runs[i]]);
    expect(older.status.mergedFrom).toEqual([...runs.slice(0, i - 1)].sort());
    expect(older.status.disks[0].base).toBeUndefined();
    expect(newer.status).toMatchObject({ type: 'Incremental', disks: [expect.objectContaining({ base: older.metadata.name })] });
    expect((older.status.conditions ?? []).find((c: any) => c.type === 'Merged')).toMatchObject({ status: 'True' });
    // The folded points' files are gone; the kept ones are there.
    for (const gone of runs.slice(0, i - 1))
      await eventually(async () => ((await c.request('GET', `${api}/backups/${gone}`)).status === 404 ? true : undefined), 10_000, `${gone} deleted`);
  }
  policies.now = () => Date.now();
  await merge(`${api}/backuppolicies/folding`, { spec: { paused: true } });
  // Both kept points restore (the sim checks each restored content against its checksum).
  for (const name of runs.slice(3)) {
    await post('restores', { kind: 'Restore', metadata: { name: `fold-${name}` }, spec: { backup: name, volume: `fold-${name}` } });
    expect((await finished('restores', `fold-${name}`)).status).toMatchObject({ phase: 'Succeeded' });
  }
});
