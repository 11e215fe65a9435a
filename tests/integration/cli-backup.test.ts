import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually, kubevmApi } from '../helpers/cluster';
import type { Runtime } from '../../cluster/runtime';
import { startSimRuntime } from '../helpers/runtime';
import { defaultBackupName, defaultRestoreName, humanBytes } from '../../cli/backup';

/**
 * `kubevm backup`, `kubevm backups` and `kubevm restore` as a user runs them: the
 * real bin/kubevm in a subprocess (KUBECONFIG pointing at the test cluster),
 * against the embedded API server, the controller and a node agent on the sim
 * backend. Each command's effect is checked on the objects through the API as
 * well as on what it prints.
 */
const bin = path.join(__dirname, '..', '..', 'bin', 'kubevm');
let c: TestCluster;
let rt: Runtime;
const ns = 'default';
const { api, get, post } = kubevmApi(() => c, ns);

function kubevm(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(
      process.execPath,
      [bin, ...args],
      { timeout: 60_000, env: { ...process.env, KUBECONFIG: c.kubeconfigPath, ...env } },
      (err, stdout, stderr) => resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr }),
    ),
  );
}

/** The name a `kubevm backup` printed on its first line (`backup/NAME created …`). */
function createdName(stdout: string): string {
  const m = /^backup\/(\S+) created/m.exec(stdout);
  if (!m) throw new Error(`no "backup/NAME created" in:\n${stdout}`);
  return m[1];
}

/** The rows of a `kubevm backups` table, as cells. */
function rows(stdout: string): string[][] {
  return stdout
    .trim()
    .split('\n')
    .map((l) => l.trim().split(/\s{3,}/));
}

const names: { full?: string; inc?: string } = {};

beforeAll(async () => {
  c = await startTestCluster();
  rt = await startSimRuntime(c, { sim: { delays: { startMs: 20, guestReadyMs: 50, stopMs: 20, jitter: 0, backupMs: 300 } } });
  await post('volumes', { kind: 'Volume', metadata: { name: 'alpha-root' }, spec: { size: '16Mi', source: { blank: {} } } });
  await post('volumes', { kind: 'Volume', metadata: { name: 'bk' }, spec: { volumeMode: 'Filesystem', size: '1Gi' } });
  await post('virtualmachines', {
    kind: 'VirtualMachine',
    metadata: { name: 'alpha' },
    spec: { backend: 'sim', memory: '64Mi', disks: [{ name: 'root', volume: 'alpha-root' }] },
  });
  await eventually(
    async () => {
      const v = await get(`${api}/virtualmachines/alpha`);
      return v.status?.printableStatus === 'Running' && v.status?.ready ? v : undefined;
    },
    20_000,
    'alpha running',
  );
}, 60_000);

afterAll(async () => {
  await rt?.stop();
  await c?.cleanup();
});

test('backup --full, then a default Incremental on it: printed summary and the objects', async () => {
  const full = await kubevm(['backup', 'alpha', '--full']);
  expect(full.stderr).toBe('');
  expect(full.code).toBe(0);
  names.full = createdName(full.stdout);
  expect(names.full).toMatch(/^alpha-\d{8}-\d{6}(-\d)?$/);
  const fb = await get(`${api}/backups/${names.full}`);
  expect(fb.spec).toEqual({ vm: 'alpha', type: 'Full' });
  expect(fb.metadata.labels['kubevm.dev/vm']).toBe('alpha');
  expect(fb.status).toMatchObject({ phase: 'Succeeded', type: 'Full', reason: 'Requested', online: true });
  const fp = fb.status.disks[0];
  // The phases it saw (polling may miss a short one), ending with Succeeded, then the summary.
  const progress = full.stdout.split('\n').filter((l) => l.startsWith(`backup/${names.full}: `));
  expect(progress.length).toBeGreaterThan(0);
  for (const l of progress) expect(l).toMatch(/: (Pending|Running|Succeeded)(: .*)?$/);
  expect(progress[progress.length - 1]).toMatch(/: Succeeded(: .*)?$/);
  expect(full.stdout).toContain(`Backup default/${names.full} Succeeded`);
  expect(full.stdout).toMatch(/type: +Full \(Requested\)/);
  const diskLine = full.stdout.split('\n').find((l) => l.trim().startsWith('root '))!;
  expect(diskLine.trim().split(/\s{3,}/)).toEqual(['root', humanBytes(fp.size), `${fp.checksum.slice(0, 22)}…`, '-']);
  expect(full.stdout).toMatch(/duration: +\d+\.\d+ s/);

  const inc = await kubevm(['backup', 'alpha']);
  expect(inc.code).toBe(0);
  names.inc = createdName(inc.stdout);
  expect(names.inc).not.toBe(names.full);
  const ib = await get(`${api}/backups/${names.inc}`);
  expect(ib.spec).toEqual({ vm: 'alpha', type: 'Incremental' });
  expect(ib.status).toMatchObject({ phase: 'Succeeded', type: 'Incremental' });
  expect(ib.status.disks[0].base).toBe(names.full);
  expect(inc.stdout).toMatch(/type: +Incremental\n/);
  const incDisk = inc.stdout.split('\n').find((l) => l.trim().startsWith('root '))!;
  expect(incDisk.trim().split(/\s{3,}/)).toEqual([
    'root',
    humanBytes(ib.status.disks[0].size),
    `${ib.status.disks[0].checksum.slice(0, 22)}…`,
    names.full,
  ]);
}, 60_000);

test('backup --name --bandwidth --target-volume --no-wait: the flags reach the spec; a new target is its own chain', async () => {
  const r = await kubevm(['backup', 'alpha', '--name', 'alpha-to-bk', '--bandwidth=50', '--target-volume', 'bk', '--no-wait']);
  expect(r.code).toBe(0);
  expect(r.stdout.trim()).toBe(
    'backup/alpha-to-bk created (Incremental of VirtualMachine default/alpha, at most 50 MiB/s per disk)',
  );
  const b = await get(`${api}/backups/alpha-to-bk`);
  expect(b.spec).toEqual({ vm: 'alpha', type: 'Incremental', target: { volume: 'bk' }, bandwidthMiBps: 50 });
  // It returned before the run ended; the run goes on without it. A target of its own has no base: Full.
  const done = await eventually(
    async () => {
      const x = await get(`${api}/backups/alpha-to-bk`);
      return ['Succeeded', 'Failed'].includes(x.status?.phase) ? x : undefined;
    },
    20_000,
    'alpha-to-bk finished',
  );
  expect(done.status).toMatchObject({ phase: 'Succeeded', type: 'Full', reason: 'NoBase' });
  // A taken --name is an API error: exit 1, nothing changed.
  const dup = await kubevm(['backup', 'alpha', '--name', 'alpha-to-bk']);
  expect(dup.code).toBe(1);
  expect(dup.stderr).toBe('kubevm backup: Backup default/alpha-to-bk already exists; choose another --name\n');
  expect((await get(`${api}/backups/alpha-to-bk`)).metadata.uid).toBe(b.metadata.uid);
}, 60_000);

test("backups lists the VM's Backups oldest first; none for another VM", async () => {
  const r = await kubevm(['backups', 'alpha']);
  expect(r.code).toBe(0);
  const t = rows(r.stdout);
  expect(t[0]).toEqual(['NAME', 'POLICY', 'TYPE', 'PHASE', 'BASE', 'SIZE', 'COMPLETED']);
  const items = (await get(`${api}/backups?labelSelector=kubevm.dev/vm%3Dalpha`)).items;
  const byName = new Map<string, any>(items.map((b: any) => [b.metadata.name, b]));
  expect(t.slice(1).map((row) => row[0])).toEqual([names.full, names.inc, 'alpha-to-bk']);
  for (const row of t.slice(1)) {
    const b = byName.get(row[0]);
    const size = b.status.disks.reduce((s: number, d: any) => s + d.size, 0);
    expect(row).toEqual([
      b.metadata.name,
      'on-demand',
      b.status.type,
      'Succeeded',
      b.status.disks[0].base ?? '-',
      humanBytes(size),
      b.status.completionTime,
    ]);
  }
  expect(t[2][4]).toBe(names.full);

  const none = await kubevm(['backups', 'nobody']);
  expect(none.code).toBe(0);
  expect(none.stdout.trim()).toBe('No backups of VirtualMachine default/nobody.');
}, 60_000);

test("restore --to a new Volume: Succeeded with the point's checksum, the Volume made from the backup", async () => {
  const point = (await get(`${api}/backups/${names.inc}`)).status.disks[0];
  const r = await kubevm(['restore', names.inc!, '--to', 'alpha-copy']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  const rname = `restore-${names.inc}`;
  expect(r.stdout).toContain(`restore/${rname} created (Backup ${names.inc} → new Volume alpha-copy)`);
  expect(r.stdout).toContain(`Restore default/${rname} Succeeded: restored and verified`);
  expect(r.stdout).toMatch(/volume: +alpha-copy\n/);
  expect(r.stdout).toContain(`checksum: ${point.checksum}`);
  const rs = await get(`${api}/restores/${rname}`);
  expect(rs.spec).toMatchObject({ backup: names.inc, volume: 'alpha-copy' });
  expect(rs.status).toMatchObject({ phase: 'Succeeded', volume: 'alpha-copy', checksum: point.checksum });
  const vol = await get(`${api}/volumes/alpha-copy`);
  expect(vol.status.phase).toBe('Ready');
  expect(vol.spec.source.fromBackup).toEqual({ backup: names.inc, disk: 'root' });

  // The same again: the default name is taken; the message says what to do, and nothing changes.
  const again = await kubevm(['restore', names.inc!, '--to', 'alpha-copy-2']);
  expect(again.code).toBe(1);
  expect(again.stderr).toBe(
    `kubevm restore: Restore default/${rname} already exists (from an earlier restore of ${names.inc}); pass --name for a new one\n`,
  );
  expect((await get(`${api}/restores/${rname}`)).metadata.uid).toBe(rs.metadata.uid);
  expect((await c.request('GET', `${api}/volumes/alpha-copy-2`)).status).toBe(404);
}, 60_000);

test("failures exit 1 with the controller's words: a VM that does not exist, an in-place restore of a running VM", async () => {
  const ghost = await kubevm(['backup', 'ghost', '--name', 'ghost-1']);
  expect(ghost.code).toBe(1);
  expect(ghost.stdout).toContain('backup/ghost-1: Failed: spec.vm: VirtualMachine default/ghost not found');
  expect(ghost.stderr).toBe(
    'kubevm backup: Backup default/ghost-1 failed: VirtualMachineNotFound: spec.vm: VirtualMachine default/ghost not found\n',
  );
  const b = await get(`${api}/backups/ghost-1`);
  expect(b.status).toMatchObject({ phase: 'Failed', reason: 'VirtualMachineNotFound' });

  const inPlace = await kubevm(['restore', names.full!, '--in-place', '--name', 'in-place-1']);
  expect(inPlace.code).toBe(1);
  expect(inPlace.stderr).toMatch(
    /^kubevm restore: Restore default\/in-place-1 failed: .*VirtualMachine alpha is running .*stop it first/,
  );
  const rs = await get(`${api}/restores/in-place-1`);
  expect(rs.spec).toMatchObject({ backup: names.full, inPlace: true });
  expect(rs.status.phase).toBe('Failed');
  // The VM was not touched.
  expect((await get(`${api}/virtualmachines/alpha`)).status.printableStatus).toBe('Running');
}, 60_000);

test('a backup that cannot start times out with exit 1, what it waited for, and goes on', async () => {
  // beta's disk names a Volume that does not exist: the controller keeps the Backup waiting for it.
  await post('virtualmachines', {
    kind: 'VirtualMachine',
    metadata: { name: 'beta' },
    spec: { backend: 'sim', memory: '64Mi', runStrategy: 'Halted', disks: [{ name: 'root', volume: 'beta-root' }] },
  });
  const r = await kubevm(['backup', 'beta', '--name', 'beta-1', '--timeout', '2']);
  expect(r.code).toBe(1);
  expect(r.stdout).toContain('backup/beta-1: Pending: waiting for Volume beta-root (disk root) to be Ready');
  expect(r.stderr).toBe(
    'kubevm backup: timed out after 2 s waiting for Backup default/beta-1 (last seen: Pending: waiting for Volume beta-root (disk root) to be Ready); it carries on: kubectl get vmbackup -n default beta-1\n',
  );
  const b = await get(`${api}/backups/beta-1`);
  expect(b.metadata.deletionTimestamp).toBeUndefined();
  expect(b.status.phase).toBeUndefined();
  // backups shows it as not started.
  const list = await kubevm(['backups', 'beta']);
  expect(rows(list.stdout)[1]).toEqual(['beta-1', 'on-demand', 'Incremental', '-', '-', '-', '-']);
}, 60_000);

test('flag errors exit 2 naming the flag and the rule, and create nothing', async () => {
  const before = (await get(`${api}/backups`)).items.length;
  const beforeRestores = (await get(`${api}/restores`)).items.length;
  const cases: [string[], string][] = [
    [['backup', 'alpha', '--bandwidth', 'x'], '--bandwidth: "x" must be a whole number ≥ 1'],
    [['backup', 'alpha', '--bandwidth=0'], '--bandwidth: "0" must be a whole number ≥ 1'],
    [
      ['backup', 'alpha', '--target-volume', 'bk', '--target-path', '/srv/b'],
      '--target-volume and --target-path exclude each other',
    ],
    [['backup', 'alpha', '--target-path', 'rel/dir'], '--target-path: "rel/dir" must be an absolute directory'],
    [['backup', 'alpha', '--timeout', '-5'], '--timeout: "-5" must be a positive number of seconds'],
    [['backup', 'alpha', '--name', 'Not_A_Label'], '--name: "Not_A_Label" must be a DNS label'],
    [['backup', 'alpha', '--incremental'], 'unknown flag "--incremental"'],
    [['backup'], 'backup needs a VirtualMachine name'],
    [['backups', 'alpha', '--full'], 'unknown flag "--full"'],
    [['restore', 'x'], 'restore needs --to VOLUME (a new Volume) or --in-place'],
    [['restore', 'x', '--to', 'v', '--in-place'], '--to and --in-place exclude each other'],
    [['restore', 'x', '--to'], '--to needs a value'],
  ];
  const results = await Promise.all(cases.map(([args]) => kubevm(args)));
  for (const [i, [args, msg]] of cases.entries()) {
    expect([args, results[i].code]).toEqual([args, 2]);
    expect(results[i].stderr).toContain(`kubevm: ${msg}`);
  }
  expect((await get(`${api}/backups`)).items.length).toBe(before);
  expect((await get(`${api}/restores`)).items.length).toBe(beforeRestores);
}, 120_000);

test('default names stay DNS labels of at most 63 characters', () => {
  const at = new Date(Date.UTC(2026, 2, 9, 4, 5, 6));
  expect(defaultBackupName('db', at)).toBe('db-20260309-040506');
  expect(defaultBackupName('db', at, 2)).toBe('db-20260309-040506-2');
  const long = `${'a'.repeat(46)}-${'b'.repeat(16)}`; // 63 characters; cut at the dash
  for (const attempt of [1, 2]) {
    const n = defaultBackupName(long, at, attempt);
    expect(n.length).toBeLessThanOrEqual(63);
    expect(n).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
    expect(n).not.toContain('--');
  }
  expect(defaultBackupName(long, at)).toBe(`${'a'.repeat(46)}-20260309-040506`);
  expect(defaultRestoreName('x'.repeat(70))).toBe(`restore-${'x'.repeat(55)}`);
  expect(defaultRestoreName(`${'x'.repeat(54)}-yy`)).toBe(`restore-${'x'.repeat(54)}`);
  expect([humanBytes(512), humanBytes(4096), humanBytes(16 * 1024 ** 2), humanBytes(1024 ** 3)]).toEqual([
    '512 B',
    '4.0 KiB',
    '16 MiB',
    '1.0 GiB',
  ]);
});
