import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startTestCluster, TestCluster, eventually, tempDir } from '../helpers/cluster';
import { startRuntime, Runtime } from '../../cluster/runtime';
import type { QemuBackend } from '../../controller/hal';
import { ensureQemu } from '../guest';

/**
 * Backups through the whole stack on real QEMU: the embedded API server, the
 * controller and a node agent with the qemu backend. The VM has no guest
 * (firmware only); the test writes known patterns through the disk's own
 * virtio block backend with HMP `qemu-io` (the path guest writes take), and
 * keeps a sparse raw reference file with the same writes. Before each Backup
 * it captures the live disk (VM paused, QEMU's caches flushed, `qemu-img
 * convert`), checks the capture against the reference, and at the end every
 * point restored through a Restore into a new Volume must be bit-identical to
 * its capture (`qemu-img compare`). Then: kill -9 of QEMU in the middle of a
 * backup, the next backup, and an in-place restore onto the stopped VM's disk.
 */
const MiB = 1 << 20;
const SIZE = 1024 * MiB;
const ns = 'default';
const api = `/apis/kubevm.dev/v1alpha1/namespaces/${ns}`;

let c: TestCluster;
let rt: Runtime;
let work: string;
let ref: string;

const get = async (p: string) => (await c.request('GET', p)).json;
const merge = (p: string, body: any) => c.request('PATCH', p, body, { 'Content-Type': 'application/merge-patch+json' });
async function post(plural: string, body: any): Promise<any> {
  const r = await c.request('POST', `${api}/${plural}`, { apiVersion: 'kubevm.dev/v1alpha1', ...body });
  if (r.status !== 201) throw new Error(`POST ${plural}: ${r.status} ${r.text}`);
  return r.json;
}

function backend(): QemuBackend {
  return rt.agents[0]['opts'].backend as QemuBackend;
}

function img(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** `qemu-img compare`: "Images are identical." or the difference. */
function compare(a: string, fa: string, b: string, fb: string): string {
  const r = spawnSync('qemu-img', ['compare', '-f', fa, '-F', fb, a, b], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : `differ (exit ${r.status}): ${r.stdout.trim()} ${r.stderr.trim()}`;
}

/** The running instance of the VM (its uid is the backend's). */
async function instance(notUid?: string): Promise<any> {
  return eventually(
    async () => {
      const vmi = await get(`${api}/virtualmachineinstances/bk`);
      const uid = vmi?.metadata?.uid;
      if (!uid || uid === notUid || vmi.status?.phase !== 'Running') return undefined;
      return backend().status(uid)?.phase === 'Running' ? vmi : undefined;
    },
    90_000,
    'the VM running on QEMU',
  );
}

/** Writes through the virtio device's block backend (in 64 MiB pieces) and into the reference. */
async function write(uid: string, off: number, len: number, pattern: number): Promise<void> {
  for (let at = off; at < off + len; at += 64 * MiB) {
    const n = Math.min(64 * MiB, off + len - at);
    const out = await backend().qmp<string>(uid, 'human-monitor-command', {
      'command-line': `qemu-io -d disk-data/virtio-backend "write -P 0x${pattern.toString(16)} ${at} ${n}"`,
    });
    expect(out).toBe('');
    const fd = fs.openSync(ref, 'r+');
    fs.writeSync(fd, Buffer.alloc(n, pattern), 0, n, at);
    fs.closeSync(fd);
  }
}

async function flush(uid: string): Promise<void> {
  expect(
    await backend().qmp<string>(uid, 'human-monitor-command', { 'command-line': 'qemu-io -d disk-data/virtio-backend "flush"' }),
  ).toBe('');
}

/** The live disk at this moment (as tests/integration/hal-backup.test.ts takes it): pause, flush, copy, resume. */
async function capture(uid: string, disk: string, name: string): Promise<string> {
  const b = backend();
  await b.pause(uid);
  try {
    await flush(uid);
    const out = path.join(work, `capture-${name}.raw`);
    img('convert', '-U', '-f', 'qcow2', '-O', 'raw', disk, out);
    return out;
  } finally {
    await b.resume(uid);
  }
}

async function finished(plural: string, name: string, timeoutMs = 120_000): Promise<any> {
  return eventually(
    async () => {
      const o = await get(`${api}/${plural}/${name}`);
      return ['Succeeded', 'Failed'].includes(o.status?.phase) ? o : undefined;
    },
    timeoutMs,
    `${plural}/${name} to finish`,
  );
}

async function backup(name: string, spec: any = {}): Promise<any> {
  await post('backups', { kind: 'Backup', metadata: { name }, spec: { vm: 'bk', ...spec } });
  return finished('backups', name);
}

const captures: Record<string, string> = {};
let diskPath: string;

beforeAll(async () => {
  ensureQemu();
  c = await startTestCluster();
  work = tempDir('kubevm-bkq-');
  ref = path.join(work, 'reference.raw');
  fs.writeFileSync(ref, '');
  fs.truncateSync(ref, SIZE);
  rt = await startRuntime({ kubeconfigPath: c.kubeconfigPath, dataDir: c.dataDir, nodes: 1, backend: 'qemu' });
  await post('volumes', {
    kind: 'Volume',
    metadata: { name: 'data' },
    spec: { size: '1Gi', format: 'qcow2', source: { blank: {} } },
  });
  // No guest: the firmware finds nothing to boot and waits; the disk is written by the test.
  await post('virtualmachines', {
    kind: 'VirtualMachine',
    metadata: { name: 'bk' },
    spec: { runStrategy: 'Always', memory: '64Mi', terminationGracePeriodSeconds: 0, disks: [{ name: 'data', volume: 'data' }] },
  });
  diskPath = (
    await eventually(
      async () => {
        const v = await get(`${api}/volumes/data`);
        return v.status?.phase === 'Ready' ? v : undefined;
      },
      30_000,
      'Volume data Ready',
    )
  ).status.path;
}, 120_000);

afterAll(async () => {
  await c?.request('DELETE', `${api}/virtualmachines/bk`).catch(() => undefined);
  await rt?.stop();
  // Agents let VMs run across their own restarts; the test's VMs must not outlive it.
  if (c) killQemuUnder(path.join(c.dataDir, 'nodes'));
  await c?.cleanup();
  if (work) fs.rmSync(work, { recursive: true, force: true });
}, 60_000);

function killQemuUnder(dir: string): void {
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

test('a Full and three Incrementals of the running VM, each taken right after known writes', async () => {
  const vmi = await instance();
  const uid = vmi.metadata.uid;
  expect(backend().capabilities()).toContain('backup-cbt');

  const steps: { name: string; writes: [number, number, number][] }[] = [
    // Unaligned and sub-cluster writes too: a point holds whole clusters, content must still match.
    {
      name: 'p0',
      writes: [
        [0, MiB, 0xab],
        [10 * MiB, 4 * MiB, 0xcd],
        [300 * MiB + 4096, 8192, 0x11],
        [SIZE - MiB, MiB, 0x22],
      ],
    },
    {
      name: 'p1',
      writes: [
        [512 * 1024, 64 * 1024, 0x33],
        [20 * MiB, MiB, 0x44],
      ],
    },
    {
      name: 'p2',
      writes: [
        [10 * MiB + 512, 1024, 0x55],
        [700 * MiB, 2 * MiB, 0x66],
      ],
    },
    {
      name: 'p3',
      writes: [
        [0, 4096, 0x77],
        [20 * MiB, 64 * 1024, 0x00],
      ],
    },
  ];
  const done: any[] = [];
  for (const [i, step] of steps.entries()) {
    for (const [off, len, pat] of step.writes) await write(uid, off, len, pat);
    captures[step.name] = await capture(uid, diskPath, step.name);
    expect([step.name, compare(ref, 'raw', captures[step.name], 'raw')]).toEqual([step.name, 'Images are identical.']);
    const b = await backup(step.name);
    expect([step.name, b.status.phase, b.status.message]).toEqual([step.name, 'Succeeded', expect.any(String)]);
    expect(b.status).toMatchObject({ online: true, node: 'node-0', type: i === 0 ? 'Full' : 'Incremental' });
    const [d] = b.status.disks;
    expect(d).toMatchObject({ name: 'data', volume: 'data', virtualSize: SIZE });
    expect(d.checksum).toMatch(/^chunked-blake3:[0-9a-f]{64}$/);
    expect(fs.existsSync(d.manifest)).toBe(true);
    if (i === 0) expect(b.status.reason).toBe('NoBase');
    else expect(d).toMatchObject({ base: steps[i - 1].name, baseManifest: done[i - 1].status.disks[0].manifest });
    done.push(b);
  }
  // The incrementals hold the changed clusters only: a few MiB against the full's 7 MiB of data.
  const sizes = done.map((b) => b.status.disks[0].size);
  expect(sizes[0]).toBeGreaterThan(6 * MiB);
  for (const s of sizes.slice(1)) expect(s).toBeLessThan(4 * MiB);
  expect(new Set(done.map((b) => b.status.disks[0].checksum)).size).toBe(4);
  // The manifests chain: each incremental's qcow2 is backed by its base's.
  expect(img('info', '--output=json', done[3].status.disks[0].path)).toContain('"backing-filename": "p2.qcow2"');
}, 300_000);

test('kill -9 of QEMU during a backup: the Backup is Failed with no point; the next one is Full and succeeds', async () => {
  const vmi = await instance();
  const uid = vmi.metadata.uid;
  // Enough changed data that the copy takes a while.
  await write(uid, 64 * MiB, 512 * MiB, 0x5a);
  await flush(uid);
  // bandwidthMiBps: QEMU copies at most 128 MiB/s (about 4 s for the 512 MiB), so the kill lands mid-copy.
  await post('backups', { kind: 'Backup', metadata: { name: 'doomed' }, spec: { vm: 'bk', bandwidthMiBps: 128 } });
  // Kill while QEMU's backup job is copying (neither before it started nor after it ended).
  const job = await eventually(
    async () => {
      const jobs = await backend().qmp<any[]>(uid, 'query-jobs');
      const j = jobs.find((x) => x.type === 'backup' && x.status === 'running' && x['current-progress'] > 0);
      return j && j['current-progress'] < j['total-progress'] ? j : undefined;
    },
    60_000,
    'the backup job to copy',
  );
  expect(job['total-progress']).toBeGreaterThanOrEqual(512 * MiB);
  const blockJobs = await backend().qmp<any[]>(uid, 'query-block-jobs');
  expect(blockJobs.find((x) => x.device === job.id)).toMatchObject({ type: 'backup', speed: 128 * MiB });
  const running = await get(`${api}/backups/doomed`);
  expect(running.status).toMatchObject({ phase: 'Running', type: 'Incremental' });
  process.kill(vmi.status.pid, 'SIGKILL');

  const doomed = await finished('backups', 'doomed');
  expect(doomed.status).toMatchObject({ phase: 'Failed', reason: 'BackupFailed' });
  expect(doomed.status.message).toMatch(/QEMU went away during the backup/);
  expect((doomed.status.conditions ?? []).find((x: any) => x.type === 'Complete')).toBeUndefined();
  const dir = path.dirname(running.status.disks[0].manifest);
  expect(fs.readdirSync(dir).filter((f) => f.startsWith('doomed.'))).toEqual([]);
  // A Failed backup does not restore.
  await post('restores', { kind: 'Restore', metadata: { name: 'r-doomed' }, spec: { backup: 'doomed', volume: 'never' } });
  expect((await finished('restores', 'r-doomed')).status.message).toContain(
    'Backup doomed failed; only Succeeded backups restore',
  );

  // runStrategy Always starts a new QEMU; the writes made before the kill are on the disk.
  const next = await instance(uid);
  captures.p5 = await capture(next.metadata.uid, diskPath, 'p5');
  expect(compare(ref, 'raw', captures.p5, 'raw')).toBe('Images are identical.');
  const p5 = await backup('p5');
  // The bitmaps of the killed QEMU were never stored (or are marked inconsistent): the HAL says which.
  expect(p5.status).toMatchObject({ phase: 'Succeeded', type: 'Full', online: true });
  expect(['BitmapMissing', 'BitmapInconsistent']).toContain(p5.status.reason);
  expect(p5.status.disks[0].base).toBeUndefined();
  expect(p5.status.disks[0].size).toBeGreaterThan(512 * MiB);
}, 300_000);

test('every Succeeded point restores into a new Volume bit-identical to the disk at its moment', async () => {
  for (const p of ['p0', 'p1', 'p2', 'p3', 'p5']) {
    const point = (await get(`${api}/backups/${p}`)).status.disks[0];
    await post('restores', { kind: 'Restore', metadata: { name: `r-${p}` }, spec: { backup: p, volume: `restored-${p}` } });
    const r = await finished('restores', `r-${p}`);
    expect([p, r.status.phase, r.status.message]).toEqual([p, 'Succeeded', 'restored and verified']);
    expect(r.status).toMatchObject({ volume: `restored-${p}`, checksum: point.checksum });
    const v = await get(`${api}/volumes/restored-${p}`);
    expect(v.status).toMatchObject({ phase: 'Ready', nodeName: 'node-0', virtualSize: SIZE });
    expect(v.spec.source.fromBackup).toEqual({ backup: p, disk: 'data' });
    expect([p, compare(captures[p], 'raw', v.status.path, 'qcow2')]).toEqual([p, 'Images are identical.']);
  }
}, 600_000);

test('in place onto the stopped VM: the disk goes back to a point; the next (offline) backup is Full with the same content', async () => {
  await post('restores', { kind: 'Restore', metadata: { name: 'inplace-running' }, spec: { backup: 'p1', inPlace: true } });
  expect((await finished('restores', 'inplace-running')).status.message).toMatch(/VirtualMachine bk is running .*stop it first/);

  expect((await merge(`${api}/virtualmachines/bk`, { spec: { runStrategy: 'Halted' } })).status).toBe(200);
  await eventually(
    async () => ((await get(`${api}/virtualmachines/bk`)).status?.printableStatus === 'Stopped' ? true : undefined),
    60_000,
    'bk Stopped',
  );
  await eventually(
    async () => ((await c.request('GET', `${api}/virtualmachineinstances/bk`)).status === 404 ? true : undefined),
    30_000,
    'instance removed',
  );
  expect(compare(captures.p5, 'raw', diskPath, 'qcow2')).toBe('Images are identical.');

  await post('restores', { kind: 'Restore', metadata: { name: 'inplace' }, spec: { backup: 'p1', inPlace: true } });
  const r = await finished('restores', 'inplace');
  const p1 = (await get(`${api}/backups/p1`)).status.disks[0];
  expect(r.status).toMatchObject({ phase: 'Succeeded', volume: 'data', checksum: p1.checksum, message: 'restored and verified' });
  expect(compare(captures.p1, 'raw', diskPath, 'qcow2')).toBe('Images are identical.');
  expect((await get(`${api}/volumes/data`)).status.path).toBe(diskPath);

  // Offline backup of the stopped VM: the restored disk has no bitmap, so it is Full; same content as p1.
  const off = await backup('p6');
  expect(off.status).toMatchObject({ phase: 'Succeeded', online: false, type: 'Full', reason: 'BitmapMissing' });
  expect(off.status.disks[0].checksum).toBe(p1.checksum);

  // Into a Filesystem Volume, and back out of it: the same content, checksum and bytes.
  await post('volumes', { kind: 'Volume', metadata: { name: 'vault' }, spec: { volumeMode: 'Filesystem', size: '1Gi' } });
  const inVault = await backup('p7', { type: 'Full', target: { volume: 'vault' } });
  expect(inVault.status).toMatchObject({ phase: 'Succeeded', type: 'Full' });
  const vault = await eventually(async () => {
    const v = await get(`${api}/volumes/vault`);
    return v.status?.phase === 'Ready' && v.status.actualSize >= inVault.status.disks[0].size ? v : undefined;
  }, 20_000, 'vault placed, holding the point');
  expect(vault.status.nodeName).toBe('node-0');
  expect(inVault.status.disks[0].path.startsWith(`${vault.status.path}/`)).toBe(true);
  expect(inVault.status.disks[0].checksum).toBe(p1.checksum);
  await post('restores', { kind: 'Restore', metadata: { name: 'r-p7' }, spec: { backup: 'p7', volume: 'restored-p7' } });
  expect((await finished('restores', 'r-p7')).status).toMatchObject({ phase: 'Succeeded', checksum: p1.checksum });
  expect(compare(captures.p1, 'raw', (await get(`${api}/volumes/restored-p7`)).status.path, 'qcow2')).toBe('Images are identical.');
}, 300_000);

test('a policy with mergeIncrementals on real images: the oldest kept point absorbs what retention drops and every kept point restores to its moment', async () => {
  // The VM is stopped (previous test): runs are offline, and the disk is written directly in between.
  const policies = rt.controller.policies;
  let clock = Date.now();
  policies.now = () => clock;
  await post('backuppolicies', {
    kind: 'BackupPolicy',
    metadata: { name: 'fold' },
    spec: { vms: ['bk'], schedule: '@hourly', full: { every: 100 }, retention: { keepLast: 2, mergeIncrementals: true } },
  });
  await eventually(async () => ((await get(`${api}/backuppolicies/fold`)).status?.nextScheduleTime ? true : undefined), 10_000, 'scheduled');
  const runs: { name: string; capture: string; manifest: string }[] = [];
  for (let i = 0; i < 4; i++) {
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x${(0xa0 + i).toString(16)} ${(100 + 7 * i) * MiB} ${1 + i}M`, diskPath], { stdio: 'ignore' });
    const cap = path.join(work, `fold-${i}.raw`);
    img('convert', '-f', 'qcow2', '-O', 'raw', diskPath, cap);
    // The next scheduled time after the previous run (the policy's status may lag behind a busy controller).
    const nextRun = await eventually(async () => {
      const t = Date.parse((await get(`${api}/backuppolicies/fold`)).status?.nextScheduleTime);
      return t > clock ? t : undefined;
    }, 30_000, `the policy's next run after run ${i - 1}`);
    clock = nextRun! + 1000;
    await merge(`${api}/backuppolicies/fold`, { metadata: { annotations: { tick: String(i) } } });
    const run = await eventually(async () => {
      const mine = (await get(`${api}/backups?labelSelector=kubevm.dev/backup-policy%3Dfold`)).items.filter((b: any) => !runs.some((r) => r.name === b.metadata.name));
      return mine.length === 1 && ['Succeeded', 'Failed'].includes(mine[0].status?.phase) ? mine[0] : undefined;
    }, 60_000, `run ${i}`);
    expect([i, run.status.phase, run.status.type]).toEqual([i, 'Succeeded', i === 0 ? 'Full' : 'Incremental']);
    runs.push({ name: run.metadata.name, capture: cap, manifest: run.status.disks[0].manifest });
  }
  policies.now = () => Date.now();
  await merge(`${api}/backuppolicies/fold`, { spec: { paused: true } });
  // keepLast 2: runs 2 (now self-contained) and 3; runs 0 and 1 were folded into run 2 (run 1 into it twice over).
  const kept = await eventually(async () => {
    const items = (await get(`${api}/backups?labelSelector=kubevm.dev/backup-policy%3Dfold`)).items.filter((b: any) => !b.metadata.deletionTimestamp);
    return items.length === 2 && items.some((b: any) => b.metadata.name === runs[2].name && b.status.type === 'Full') ? items : undefined;
  }, 60_000, 'retention with merges');
  expect(kept.map((b: any) => b.metadata.name).sort()).toEqual([runs[2].name, runs[3].name].sort());
  const r2 = kept.find((b: any) => b.metadata.name === runs[2].name);
  expect(r2.status.mergedFrom).toEqual([runs[0].name, runs[1].name].sort());
  expect(img('info', '--output=json', r2.status.disks[0].path)).not.toContain('backing-filename');
  for (const gone of runs.slice(0, 2)) {
    await eventually(async () => ((await c.request('GET', `${api}/backups/${gone.name}`)).status === 404 ? true : undefined), 30_000, `${gone.name} deleted`);
    expect(fs.existsSync(gone.manifest)).toBe(false);
  }
  for (const r of runs.slice(2)) {
    await post('restores', { kind: 'Restore', metadata: { name: `r-${r.name}` }, spec: { backup: r.name, volume: `v-${r.name}` } });
    expect((await finished('restores', `r-${r.name}`)).status.phase).toBe('Succeeded');
    expect(compare(r.capture, 'raw', (await get(`${api}/volumes/v-${r.name}`)).status.path, 'qcow2')).toBe('Images are identical.');
  }
}, 300_000);
