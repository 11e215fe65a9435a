import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { HalError, QemuBackend, SimBackend, type BackupResult, type DiskSpec, type VmSpec } from '../../controller/hal';
import { cbtOverlayPath } from '../../controller/hal/qemu/cbt';
import { ensureQemu } from '../guest';

/**
 * The backup data path against real QEMU 7.2: VMs without a guest (firmware
 * only) whose disks are written through the device's own block backend with
 * HMP `qemu-io`, while a reference raw file gets the same writes. Every point is
 * restored into a new image and compared bit for bit (`qemu-img compare`) with
 * the reference as it was at the point's moment, and with a snapshot of the
 * live disk taken at that moment (VM paused, flushed, copied).
 */
const MiB = 1 << 20;
const SIZE = 64 * MiB;

let tmp: string;
let b: QemuBackend;

beforeAll(() => {
  ensureQemu();
  // Short: QMP socket paths live under the run root.
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kvbk-'));
  b = new QemuBackend({ runRoot: path.join(tmp, 'run'), stopGraceMs: 0 });
});

afterAll(async () => {
  for (const s of b?.list() ?? []) if (s.phase === 'Running' || s.phase === 'Paused') await b.kill(s.uid).catch(() => undefined);
  await b?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

function img(...args: string[]): string {
  return execFileSync('qemu-img', args, { encoding: 'utf8' });
}

/** `qemu-img compare`: exit 0 and "Images are identical." or the difference. */
function compare(a: string, fa: string, c: string, fc: string): string {
  const r = spawnSync('qemu-img', ['compare', '-f', fa, '-F', fc, a, c], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : `differ (exit ${r.status}): ${r.stdout.trim()} ${r.stderr.trim()}`;
}

/** The disk as it should be: the same writes applied to a raw file. */
class Reference {
  constructor(readonly file: string) {
    fs.writeFileSync(file, '');
    fs.truncateSync(file, SIZE);
  }
  write(off: number, len: number, pattern: number): void {
    const fd = fs.openSync(this.file, 'r+');
    fs.writeSync(fd, Buffer.alloc(len, pattern), 0, len, off);
    fs.closeSync(fd);
  }
  snapshot(name: string): string {
    const p = path.join(tmp, `ref-${name}.raw`);
    fs.copyFileSync(this.file, p);
    return p;
  }
}

function vm(name: string, disks: DiskSpec[]): VmSpec {
  return { name, uid: `${name}-${process.pid}`, cpu: { cores: 1 }, memoryMiB: 64, disks, nics: [], filesystems: [] };
}

/** Writes through the virtio device's block backend (the path guest writes take). */
async function io(uid: string, disk: string, cmd: string): Promise<void> {
  const r = await b.qmp<string>(uid, 'human-monitor-command', {
    'command-line': `qemu-io -d disk-${disk}/virtio-backend "${cmd}"`,
  });
  expect(r).toBe('');
}

async function write(uid: string, disk: string, ref: Reference, off: number, len: number, pattern: number): Promise<void> {
  await io(uid, disk, `write -P 0x${pattern.toString(16)} ${off} ${len}`);
  ref.write(off, len, pattern);
}

/** The live disk at this moment: pause, flush QEMU's caches, copy, resume. */
async function liveSnapshot(uid: string, disk: DiskSpec, name: string): Promise<string> {
  await b.pause(uid);
  try {
    await io(uid, disk.name, 'flush');
    const p = path.join(tmp, `live-${name}.raw`);
    img('convert', '-U', '-f', disk.format, '-O', 'raw', disk.path, p);
    return p;
  } finally {
    await b.resume(uid);
  }
}

let restoreSeq = 0;
async function restoreAndCompare(point: string, expected: string, format: 'qcow2' | 'raw' = 'qcow2'): Promise<string> {
  const dest = path.join(tmp, 'restores', `r${restoreSeq++}.${format}`);
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  const r = await b.restore({ point, dest, format });
  expect(r.dest).toBe(dest);
  expect(img('info', '--output=json', dest)).toContain(`"format": "${format}"`);
  expect(compare(expected, 'raw', dest, format)).toBe('Images are identical.');
  return dest;
}

function pointFiles(dir: string, id: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.startsWith(`${id}.`)) : [];
}

/** Waits until the backend has seen the QEMU process die of a signal. */
async function killed(uid: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (b.status(uid)!.phase !== 'Failed' && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  expect(b.status(uid)).toMatchObject({ phase: 'Failed', reason: 'Killed' });
}

function one(r: BackupResult) {
  expect(r.disks).toHaveLength(1);
  return r.disks[0];
}

async function waitProgress(seen: { done: number }[], what: string): Promise<void> {
  const end = Date.now() + 30_000;
  while (!seen.some((p) => p.done > 0)) {
    if (Date.now() > end) throw new Error(`no progress of ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('backup data path on real QEMU (qcow2 disk)', () => {
  const disk: DiskSpec = { name: 'data', path: '', format: 'qcow2', bus: 'virtio' };
  let spec: VmSpec;
  let ref: Reference;
  let target: string;
  const points: { id: string; manifest: string; expected: string }[] = [];

  beforeAll(() => {
    disk.path = path.join(tmp, 'data.qcow2');
    img('create', '-q', '-f', 'qcow2', disk.path, String(SIZE));
    ref = new Reference(path.join(tmp, 'ref.raw'));
    target = path.join(tmp, 'backups', 'vm1');
    spec = vm('bk1', [disk]);
  });

  test('a full and three incrementals of a running VM each restore bit-identically; incrementals hold only the changed clusters', async () => {
    await b.start(spec);
    const uid = spec.uid;
    expect(b.capabilities()).toContain('backup-cbt');

    await write(uid, 'data', ref, 0, MiB, 0xab);
    await write(uid, 'data', ref, 10 * MiB, 4 * MiB, 0xcd);
    await write(uid, 'data', ref, 30 * MiB, 64 * 1024, 0x11);
    await write(uid, 'data', ref, 40 * MiB, 8 * MiB, 0x22);
    expect((await b.changeTracking({ uid }))[0]).toMatchObject({ method: 'qcow2-bitmap', fullReason: 'BitmapMissing' });

    // 1. Asked for an incremental with no bitmap yet: Full, and the reason says why.
    let live = await liveSnapshot(uid, disk, 'p0');
    expect(compare(ref.file, 'raw', live, 'raw')).toBe('Images are identical.');
    const p0 = one(await b.backup({ uid }, { targetDir: target, type: 'Incremental', pointId: 'p0' }));
    expect(p0).toMatchObject({ type: 'Full', reason: 'BitmapMissing', chain: ['p0'], virtualSize: SIZE });
    expect(p0.point).toBe(path.join(target, 'data', 'p0.json'));
    expect(p0.checksum).toMatch(/^chunked-blake3:[0-9a-f]{64}$/);
    points.push({ id: 'p0', manifest: p0.point, expected: ref.snapshot('p0') });
    const bitmaps = (await b.changeTracking({ uid }))[0];
    expect(bitmaps.bitmaps.map((x) => x.name)).toEqual(['kubevm-p0']);
    expect(bitmaps).toMatchObject({ since: 'p0' });
    expect(bitmaps.fullReason).toBeUndefined();

    // 2. 64 KiB + 1 MiB changed: the incremental copies exactly those clusters.
    await write(uid, 'data', ref, 512 * 1024, 64 * 1024, 0x33);
    await write(uid, 'data', ref, 20 * MiB, MiB, 0x44);
    const p1 = one(await b.backup({ uid }, { targetDir: target, type: 'Incremental', pointId: 'p1' }));
    expect(p1).toMatchObject({ type: 'Incremental', chain: ['p0', 'p1'], base: p0.point, copiedBytes: MiB + 64 * 1024 });
    expect(p1.reason).toBeUndefined();
    // The point holds the changed bytes plus qcow2 metadata (header, L1, refcounts, one L2; 64 KiB each) and its small sums/manifest.
    expect(p1.size).toBeGreaterThanOrEqual(MiB + 64 * 1024);
    expect(p1.size).toBeLessThanOrEqual(MiB + 64 * 1024 + 6 * 64 * 1024);
    expect(p1.size * 5).toBeLessThan(p0.size);
    expect(img('info', '--output=json', p1.file)).toContain('"backing-filename": "p0.qcow2"');
    points.push({ id: 'p1', manifest: p1.point, expected: ref.snapshot('p1') });

    // 3. A cancelled incremental loses no change: the next one still has them all.
    await write(uid, 'data', ref, 50 * MiB, 2 * MiB, 0x55);
    const ac = new AbortController();
    const seen: { done: number }[] = [];
    const cancelled = b.backup(
      { uid },
      {
        targetDir: target,
        type: 'Incremental',
        pointId: 'x1',
        bytesPerSecond: 256 * 1024,
        signal: ac.signal,
        onProgress: (p) => seen.push(p),
      },
    );
    cancelled.catch(() => undefined);
    await waitProgress(seen, 'the throttled backup');
    ac.abort('test');
    await expect(cancelled).rejects.toMatchObject({ code: 'Cancelled' });
    expect(pointFiles(path.join(target, 'data'), 'x1')).toEqual([]);
    expect((await b.changeTracking({ uid }))[0].bitmaps.map((x) => x.name)).toEqual(['kubevm-p1']);

    // 4. Point in time: writes made while the copy runs are not in the point, but in the next.
    live = await liveSnapshot(uid, disk, 'p2');
    const expectedP2 = ref.snapshot('p2');
    expect(compare(expectedP2, 'raw', live, 'raw')).toBe('Images are identical.');
    const seen2: { done: number }[] = [];
    const running = b.backup(
      { uid },
      { targetDir: target, type: 'Incremental', pointId: 'p2', bytesPerSecond: 512 * 1024, onProgress: (p) => seen2.push(p) },
    );
    await waitProgress(seen2, 'the throttled backup');
    // One backup per VM at a time.
    await expect(b.backup({ uid }, { targetDir: target, type: 'Full' })).rejects.toThrow(
      /already running .*one backup per VM at a time/,
    );
    await write(uid, 'data', ref, 51 * MiB, 64 * 1024, 0x66); // inside the region being copied
    await write(uid, 'data', ref, 60 * MiB, 64 * 1024, 0x77); // outside it
    // Both writes really landed while the copy ran.
    expect(await b.qmp<any[]>(uid, 'query-jobs')).toEqual([expect.objectContaining({ status: 'running', type: 'backup' })]);
    const p2 = one(await running);
    expect(p2).toMatchObject({ type: 'Incremental', chain: ['p0', 'p1', 'p2'], copiedBytes: 2 * MiB });
    points.push({ id: 'p2', manifest: p2.point, expected: expectedP2 });

    await write(uid, 'data', ref, 0, 64 * 1024, 0x88);
    const p3 = one(await b.backup({ uid }, { targetDir: target, type: 'Incremental', pointId: 'p3' }));
    // The two writes made during p2's copy, and the new one.
    expect(p3).toMatchObject({ type: 'Incremental', chain: ['p0', 'p1', 'p2', 'p3'], copiedBytes: 3 * 64 * 1024 });
    points.push({ id: 'p3', manifest: p3.point, expected: ref.snapshot('p3') });

    // Every point restores to exactly the disk of its moment, as qcow2 and as raw.
    for (const p of points) {
      await restoreAndCompare(p.manifest, p.expected, 'qcow2');
      await restoreAndCompare(p.manifest, p.expected, 'raw');
      expect(await b.verifyBackup(p.manifest)).toMatchObject({ ok: true, problems: [] });
    }
    const sums = new Set([p0, p1, p2, p3].map((p) => p.checksum));
    expect(sums.size).toBe(4);
  });

  test('a chain directory can be moved (relative backing files) and still restores', async () => {
    const moved = path.join(tmp, 'moved-chain');
    fs.cpSync(path.join(target, 'data'), moved, { recursive: true });
    const r = await b.verifyBackup(path.join(moved, 'p3.json'));
    expect(r).toMatchObject({ ok: true, chain: ['p0', 'p1', 'p2', 'p3'] });
    await restoreAndCompare(path.join(moved, 'p3.json'), points[3].expected, 'raw');
  });

  test('a tampered point is caught at restore with a clear error, and nothing is written', async () => {
    const dir = path.join(tmp, 'tampered');
    fs.cpSync(path.join(target, 'data'), dir, { recursive: true });
    // Flip one byte of p1's data (its own cluster at guest offset 20 MiB).
    const map = JSON.parse(img('map', '--output=json', path.join(dir, 'p1.qcow2'))) as any[];
    const ext = map.find((e) => e.depth === 0 && e.data && e.start <= 20 * MiB && e.start + e.length > 20 * MiB);
    const fd = fs.openSync(path.join(dir, 'p1.qcow2'), 'r+');
    const at = ext.offset + (20 * MiB - ext.start) + 1234;
    const byte = Buffer.alloc(1);
    fs.readSync(fd, byte, 0, 1, at);
    fs.writeSync(fd, Buffer.from([byte[0] ^ 0xff]), 0, 1, at);
    fs.closeSync(fd);

    const dest = path.join(tmp, 'tampered-restore.qcow2');
    const err = await b.restore({ point: path.join(dir, 'p3.json'), dest, format: 'qcow2' }).catch((e) => e);
    expect(err).toBeInstanceOf(HalError);
    expect(err.code).toBe('Failed');
    expect(err.message).toMatch(
      /restore of point p3 .*checksum mismatch: the manifest says chunked-blake3:\w+, the restored content is chunked-blake3:\w+; point p1 of the chain was modified or damaged; nothing was written/,
    );
    expect(fs.existsSync(dest)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('restore-'))).toEqual([]);
    const v = await b.verifyBackup(path.join(dir, 'p3.json'));
    expect(v.ok).toBe(false);
    expect(v.problems.join('\n')).toMatch(/point p1 was modified or damaged/);
    // The untouched original still restores.
    expect((await b.verifyBackup(points[3].manifest)).ok).toBe(true);

    // A half-written manifest, a missing base and an existing destination are refused by name.
    fs.writeFileSync(path.join(dir, 'p2.json'), '{"kind": "kubevm.dev/backup-po');
    await expect(b.restore({ point: path.join(dir, 'p3.json'), dest, format: 'raw' })).rejects.toThrow(
      /p3\.json: its base p2 is unusable: .*p2\.json: the manifest is not valid JSON/,
    );
    fs.rmSync(path.join(dir, 'p0.json'));
    await expect(b.restore({ point: path.join(dir, 'p1.json'), dest, format: 'raw' })).rejects.toThrow(
      /its base p0 is unusable: .*no manifest/,
    );
    await expect(b.restore({ point: points[0].manifest, dest: points[0].expected, format: 'raw' })).rejects.toMatchObject({
      code: 'AlreadyExists',
    });
    await expect(b.restore({ point: points[0].manifest, dest, format: 'vmdk' as any })).rejects.toThrow(
      /format: "vmdk" must be qcow2 or raw/,
    );
  });

  test('the bitmap survives a clean shutdown and restart; the next incremental follows on', async () => {
    await b.stop(spec.uid, { graceMs: 0 });
    const offline = { offline: { disks: [disk] } };
    expect(await b.changeTracking(offline)).toEqual([
      { disk: 'data', method: 'qcow2-bitmap', bitmaps: [{ name: 'kubevm-p3', point: 'p3', inconsistent: false }], since: 'p3' },
    ]);
    await b.cleanup(spec.uid);
    await b.start(spec);
    expect((await b.changeTracking({ uid: spec.uid }))[0]).toMatchObject({
      since: 'p3',
      bitmaps: [{ name: 'kubevm-p3', dirtyBytes: 0 }],
    });
    await write(spec.uid, 'data', ref, 33 * MiB, 128 * 1024, 0x99);
    const p4 = one(await b.backup({ uid: spec.uid }, { targetDir: target, type: 'Incremental', pointId: 'p4' }));
    expect(p4).toMatchObject({ type: 'Incremental', chain: ['p0', 'p1', 'p2', 'p3', 'p4'], copiedBytes: 128 * 1024 });
    points.push({ id: 'p4', manifest: p4.point, expected: ref.snapshot('p4') });
    await restoreAndCompare(p4.point, points[4].expected);
    // Stored at the clean stop; loaded (and flagged in use in the image) by the next start.
    await b.stop(spec.uid, { graceMs: 0 });
    await b.cleanup(spec.uid);
    await b.start(spec);
    expect((await b.changeTracking({ uid: spec.uid }))[0]).toMatchObject({ since: 'p4', bitmaps: [{ name: 'kubevm-p4' }] });
  });

  test('kill -9 of QEMU during a backup: no point is left, the next backup is Full (BitmapInconsistent) and restores', async () => {
    const uid = spec.uid;
    await write(uid, 'data', ref, 2 * MiB, 4 * MiB, 0xa1);
    await io(uid, 'data', 'flush'); // so the written clusters' metadata is on disk before the kill
    const seen: { done: number }[] = [];
    const doomed = b.backup(
      { uid },
      { targetDir: target, type: 'Incremental', pointId: 'p5', bytesPerSecond: 512 * 1024, onProgress: (p) => seen.push(p) },
    );
    doomed.catch(() => undefined);
    await waitProgress(seen, 'the throttled backup');
    process.kill(b.status(uid)!.pid!, 'SIGKILL');
    await expect(doomed).rejects.toThrow(/QEMU went away during the backup/);
    expect(pointFiles(path.join(target, 'data'), 'p5')).toEqual([]);
    await killed(uid);

    await b.cleanup(uid);
    await b.start(spec);
    const t = (await b.changeTracking({ uid }))[0];
    expect(t.fullReason).toBe('BitmapInconsistent');
    expect(t.bitmaps).toEqual([expect.objectContaining({ name: 'kubevm-p4', inconsistent: true })]);
    const live = await liveSnapshot(uid, disk, 'p6');
    expect(compare(ref.file, 'raw', live, 'raw')).toBe('Images are identical.');
    const p6 = one(await b.backup({ uid }, { targetDir: target, type: 'Incremental', pointId: 'p6' }));
    expect(p6).toMatchObject({ type: 'Full', reason: 'BitmapInconsistent', chain: ['p6'] });
    expect((await b.changeTracking({ uid }))[0].bitmaps.map((x) => x.name)).toEqual(['kubevm-p6']);
    points.push({ id: 'p6', manifest: p6.point, expected: ref.snapshot('p6') });
    await restoreAndCompare(p6.point, points[5].expected, 'raw');

    // A crash after a backup in the same QEMU run: p6's bitmap was made in this run,
    // and QEMU stores new persistent bitmaps only when it closes the image. It is gone.
    process.kill(b.status(uid)!.pid!, 'SIGKILL');
    await killed(uid);
    expect(await b.changeTracking({ offline: { disks: [disk] } })).toEqual([
      { disk: 'data', method: 'qcow2-bitmap', bitmaps: [], fullReason: 'BitmapMissing' },
    ]);
    await b.cleanup(uid);
    await b.start(spec);
  });

  test('an agent restart mid-backup: the new backend reaps the orphaned job and the next incremental has every change', async () => {
    const uid = spec.uid;
    expect(one(await b.backup({ uid }, { targetDir: target, type: 'Full', pointId: 'ar0' }))).toMatchObject({ type: 'Full' });
    await write(uid, 'data', ref, 24 * MiB, 2 * MiB, 0xd1);
    const seen: { done: number }[] = [];
    const orphan = b.backup(
      { uid },
      { targetDir: target, type: 'Incremental', pointId: 'orphan', bytesPerSecond: 256 * 1024, onProgress: (p) => seen.push(p) },
    );
    orphan.catch(() => undefined);
    await waitProgress(seen, 'the throttled backup');
    // The agent goes away (its QMP connection with it); QEMU keeps the job running.
    await b.close();
    await expect(orphan).rejects.toThrow();
    b = new QemuBackend({ runRoot: path.join(tmp, 'run'), stopGraceMs: 0 });
    expect(await b.adopt(uid)).toMatchObject({ adopted: true, phase: 'Running' });
    const jobs = await b.qmp<any[]>(uid, 'query-jobs');
    expect(jobs.map((j) => j.id)).toEqual([expect.stringMatching(/^kvbk-/)]);
    await write(uid, 'data', ref, 28 * MiB, 64 * 1024, 0xd2);
    const next = one(await b.backup({ uid }, { targetDir: target, type: 'Incremental', pointId: 'after-restart' }));
    // The orphan's 2 MiB (never completed) and the new 64 KiB.
    expect(next).toMatchObject({ type: 'Incremental', chain: ['ar0', 'after-restart'], copiedBytes: 2 * MiB + 64 * 1024 });
    expect(pointFiles(path.join(target, 'data'), 'orphan')).toEqual([]);
    expect(await b.qmp<any[]>(uid, 'query-jobs')).toEqual([]);
    expect((await b.changeTracking({ uid }))[0].bitmaps.map((x) => x.name)).toEqual(['kubevm-after-restart']);
    await restoreAndCompare(next.point, ref.snapshot('after-restart'));
  });

  test('offline: incremental and full of the stopped VM from the persistent bitmap; in-place restore', async () => {
    const offline = { offline: { disks: [disk], vm: { name: spec.name, uid: spec.uid } } };
    await expect(b.backup(offline, { targetDir: target, type: 'Full' })).rejects.toThrow(
      /in use by another process \(is the VM still running\?\)/,
    );
    await b.stop(spec.uid, { graceMs: 0 });
    // The bitmap made live before the clean stop carries on offline.
    const p6b = await b.backup(offline, { targetDir: target, type: 'Incremental', pointId: 'p6b' });
    expect(p6b.mode).toBe('offline');
    expect(one(p6b)).toMatchObject({ type: 'Incremental', chain: ['ar0', 'after-restart', 'p6b'], copiedBytes: 0 });
    // Written while stopped (qemu-io opens the image; the bitmap records it like QEMU would).
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -P 0xb2 ${7 * MiB} ${MiB}`, disk.path], { stdio: 'ignore' });
    ref.write(7 * MiB, MiB, 0xb2);
    const p7 = await b.backup(offline, { targetDir: target, type: 'Incremental', pointId: 'p7' });
    expect(one(p7)).toMatchObject({ type: 'Incremental', chain: ['ar0', 'after-restart', 'p6b', 'p7'], copiedBytes: MiB });
    const expected7 = ref.snapshot('p7');
    await restoreAndCompare(one(p7).point, expected7);
    const p8 = one(await b.backup(offline, { targetDir: target, type: 'Full', pointId: 'p8' }));
    expect(p8).toMatchObject({ type: 'Full', chain: ['p8'] });
    expect(p8.reason).toBeUndefined();
    await restoreAndCompare(p8.point, expected7);
    expect(await b.changeTracking(offline)).toEqual([
      expect.objectContaining({ since: 'p8', bitmaps: [expect.objectContaining({ name: 'kubevm-p8' })] }),
    ]);

    // In place: the stopped VM's disk goes back to p4; its bitmaps go with the old content.
    await b.restore({ point: points[4].manifest, dest: disk.path, format: 'qcow2', inPlace: true });
    expect(compare(points[4].expected, 'raw', disk.path, 'qcow2')).toBe('Images are identical.');
    expect((await b.changeTracking(offline))[0]).toMatchObject({ fullReason: 'BitmapMissing', bitmaps: [] });
    const p9 = one(await b.backup(offline, { targetDir: target, type: 'Incremental', pointId: 'p9' }));
    expect(p9).toMatchObject({ type: 'Full', reason: 'BitmapMissing' });
    await b.cleanup(spec.uid);
  });
});

describe('raw disks through the qcow2 metadata overlay', () => {
  test('live full, offline incremental; the raw file stays a plain raw image; stale overlays are remade', async () => {
    const raw = path.join(tmp, 'plain.raw');
    img('create', '-q', '-f', 'raw', raw, String(32 * MiB));
    const disk: DiskSpec = { name: 'rawdisk', path: raw, format: 'raw', bus: 'virtio', changeTracking: true };
    const ref = new Reference(path.join(tmp, 'ref-raw.raw'));
    fs.truncateSync(ref.file, 32 * MiB);
    const spec = vm('bk2', [disk]);
    const target = path.join(tmp, 'backups', 'vm2');
    await b.start(spec);
    const uid = spec.uid;
    expect(fs.existsSync(cbtOverlayPath(raw))).toBe(true);
    expect((await b.changeTracking({ uid }))[0]).toMatchObject({ method: 'raw-overlay', fullReason: 'BitmapMissing' });

    await write(uid, 'rawdisk', ref, 0, 3 * MiB, 0x5a);
    const r0 = one(await b.backup({ uid }, { targetDir: target, type: 'Incremental', pointId: 'r0' }));
    expect(r0).toMatchObject({ type: 'Full', reason: 'BitmapMissing' });
    const e0 = ref.snapshot('r0');
    await write(uid, 'rawdisk', ref, 16 * MiB, 256 * 1024, 0x5b);
    await b.stop(uid, { graceMs: 0 });
    // The writes are in the raw file itself.
    expect(compare(ref.file, 'raw', raw, 'raw')).toBe('Images are identical.');

    const offline = { offline: { disks: [disk] } };
    const r1 = one(await b.backup(offline, { targetDir: target, type: 'Incremental', pointId: 'r1' }));
    expect(r1).toMatchObject({ type: 'Incremental', chain: ['r0', 'r1'], copiedBytes: 256 * 1024 });
    await restoreAndCompare(r0.point, e0, 'raw');
    await restoreAndCompare(r1.point, ref.snapshot('r1'), 'raw');

    // Written behind the overlay's back: its bitmap would miss this, so it is remade.
    await new Promise((r) => setTimeout(r, 20));
    const fd = fs.openSync(raw, 'r+');
    fs.writeSync(fd, Buffer.alloc(4096, 0x5c), 0, 4096, 8 * MiB);
    fs.closeSync(fd);
    ref.write(8 * MiB, 4096, 0x5c);
    const r2 = one(await b.backup(offline, { targetDir: target, type: 'Incremental', pointId: 'r2' }));
    expect(r2).toMatchObject({ type: 'Full', reason: 'BitmapMissing' });
    await restoreAndCompare(r2.point, ref.snapshot('r2'), 'raw');

    // Without changeTracking a raw disk can only be backed up in full.
    const plain = { offline: { disks: [{ ...disk, changeTracking: false }] } };
    expect(one(await b.backup(plain, { targetDir: path.join(tmp, 'backups', 'vm2b'), type: 'Incremental' }))).toMatchObject({
      type: 'Full',
      reason: 'ChangeTrackingUnavailable',
    });

    // Dropping change tracking removes the overlay.
    await b.dropChangeTracking(offline);
    expect(fs.existsSync(cbtOverlayPath(raw))).toBe(false);
    await b.cleanup(uid);
  });

  test('two disks (qcow2 and raw) of one VM share one point in time; leftovers of a crashed backup are swept', async () => {
    const qcow = path.join(tmp, 'two-a.qcow2');
    const raw = path.join(tmp, 'two-b.raw');
    img('create', '-q', '-f', 'qcow2', qcow, String(SIZE));
    img('create', '-q', '-f', 'raw', raw, String(SIZE));
    const disks: DiskSpec[] = [
      { name: 'a', path: qcow, format: 'qcow2', bus: 'virtio' },
      { name: 'b', path: raw, format: 'raw', bus: 'virtio', changeTracking: true },
    ];
    const spec = vm('bk4', disks);
    const uid = spec.uid;
    const target = path.join(tmp, 'backups', 'vm4');
    // What an agent killed mid-backup leaves: point files without a manifest.
    fs.mkdirSync(path.join(target, 'a'), { recursive: true });
    for (const f of ['dead.qcow2', 'dead.sums', 'dead.json.tmp']) fs.writeFileSync(path.join(target, 'a', f), 'partial');
    const refA = new Reference(path.join(tmp, 'ref-two-a.raw'));
    const refB = new Reference(path.join(tmp, 'ref-two-b.raw'));
    await b.start(spec);
    await write(uid, 'a', refA, 0, 2 * MiB, 0xc1);
    await write(uid, 'b', refB, 5 * MiB, 2 * MiB, 0xc2);
    const full = await b.backup({ uid }, { targetDir: target, type: 'Incremental', pointId: 't0' });
    expect(full.disks.map((d) => [d.disk, d.type, d.reason])).toEqual([
      ['a', 'Full', 'BitmapMissing'],
      ['b', 'Full', 'BitmapMissing'],
    ]);
    expect(fs.readdirSync(path.join(target, 'a')).sort()).toEqual(['t0.json', 't0.qcow2', 't0.sums']);
    const [ea0, eb0] = [refA.snapshot('t0a'), refB.snapshot('t0b')];
    await write(uid, 'a', refA, 9 * MiB, 64 * 1024, 0xc3);
    await write(uid, 'b', refB, 0, 64 * 1024, 0xc4);
    const inc = await b.backup({ uid }, { targetDir: target, type: 'Incremental', pointId: 't1' });
    expect(inc.disks.map((d) => [d.disk, d.type, d.copiedBytes])).toEqual([
      ['a', 'Incremental', 64 * 1024],
      ['b', 'Incremental', 64 * 1024],
    ]);
    const manifests = inc.disks.map((d) => JSON.parse(fs.readFileSync(d.point, 'utf8')));
    expect(manifests[0].startedAt).toBe(manifests[1].startedAt);
    expect(manifests.map((m) => m.vm)).toEqual([
      { name: 'bk4', uid },
      { name: 'bk4', uid },
    ]);
    await restoreAndCompare(full.disks[0].point, ea0, 'qcow2');
    await restoreAndCompare(full.disks[1].point, eb0, 'raw');
    await restoreAndCompare(inc.disks[0].point, refA.snapshot('t1a'), 'raw');
    await restoreAndCompare(inc.disks[1].point, refB.snapshot('t1b'), 'raw');
    // A backup of one disk only.
    const onlyB = await b.backup({ uid }, { targetDir: target, type: 'Incremental', disks: ['b'], pointId: 't2' });
    expect(onlyB.disks.map((d) => [d.disk, d.type, d.copiedBytes])).toEqual([['b', 'Incremental', 0]]);
    await b.kill(uid);
    await b.cleanup(uid);
  });

  test('bad requests are refused by field', async () => {
    const spec = vm('bk3', []);
    await expect(b.backup({ uid: 'nope' }, { targetDir: tmp, type: 'Full' })).rejects.toMatchObject({ code: 'NotFound' });
    await expect(b.backup({ offline: { disks: [] } }, { targetDir: 'rel/dir', type: 'Full' })).rejects.toThrow(
      /targetDir: "rel\/dir" must be an absolute path/,
    );
    await expect(b.backup({ offline: { disks: [] } }, { targetDir: tmp, type: 'Weekly' as any })).rejects.toThrow(
      /type: "Weekly" must be Full or Incremental/,
    );
    await expect(b.backup({ offline: { disks: [] } }, { targetDir: tmp, type: 'Full', pointId: '../x' })).rejects.toThrow(
      /pointId: "..\/x" must be 1-100 letters/,
    );
    await expect(b.backup({ offline: { disks: [] } }, { targetDir: tmp, type: 'Full' })).rejects.toThrow(
      /disks: stopped VM has no writable disk to back up/,
    );
    await expect(
      b.backup(
        { offline: { disks: [{ name: 'a', path: '/x', format: 'qcow2', bus: 'virtio' }] } },
        { targetDir: tmp, type: 'Full', disks: ['b'] },
      ),
    ).rejects.toThrow(/disks: stopped VM has no disk "b" \(has: a\)/);
    expect(spec.disks).toEqual([]);
  });
});

describe('two chains of one disk (another policy, on-demand backups)', () => {
  test('each keeps its own bitmap when the other names it in otherChains: both stay incremental and restore', async () => {
    const d: DiskSpec = { name: 'data', path: path.join(tmp, 'two-chains.qcow2'), format: 'qcow2', bus: 'virtio' };
    img('create', '-q', '-f', 'qcow2', d.path, String(SIZE));
    const r = new Reference(path.join(tmp, 'two-chains.raw'));
    const s = vm('bk-two', [d]);
    const [A, B] = [path.join(tmp, 'chains', 'a'), path.join(tmp, 'chains', 'b')];
    await b.start(s);
    try {
      await write(s.uid, 'data', r, 0, 256 * 1024, 0x11);
      expect(one(await b.backup({ uid: s.uid }, { targetDir: A, type: 'Full', pointId: 'a0', otherChains: [B] })).type).toBe('Full');
      expect(one(await b.backup({ uid: s.uid }, { targetDir: B, type: 'Full', pointId: 'b0', otherChains: [A] })).type).toBe('Full');
      const names = (await b.changeTracking({ uid: s.uid }))[0].bitmaps.map((x) => x.name).sort();
      expect(names).toEqual(['kubevm-a0', 'kubevm-b0']);
      await write(s.uid, 'data', r, 5 * MiB, 64 * 1024, 0x22);
      const a1 = one(await b.backup({ uid: s.uid }, { targetDir: A, type: 'Incremental', pointId: 'a1', otherChains: [B] }));
      expect(a1).toMatchObject({ type: 'Incremental', chain: ['a0', 'a1'], copiedBytes: 64 * 1024 });
      const expected = r.snapshot('a1');
      const b1 = one(await b.backup({ uid: s.uid }, { targetDir: B, type: 'Incremental', pointId: 'b1', otherChains: [A] }));
      expect(b1).toMatchObject({ type: 'Incremental', chain: ['b0', 'b1'], copiedBytes: 64 * 1024 });
      await restoreAndCompare(a1.point, expected);
      await restoreAndCompare(b1.point, expected);
      // Without otherChains (the default), a new point retires every older bitmap: the other chain starts over.
      await b.backup({ uid: s.uid }, { targetDir: A, type: 'Incremental', pointId: 'a2' });
      const c = one(await b.backup({ uid: s.uid }, { targetDir: B, type: 'Incremental', pointId: 'b2' }));
      expect(c).toMatchObject({ type: 'Full', reason: 'BaseMissing' }); // B's base has no bitmap any more
    } finally {
      await b.kill(s.uid).catch(() => undefined);
      await b.cleanup(s.uid).catch(() => undefined);
    }
  });
});

describe('sim backend: the same bookkeeping without QEMU', () => {
  test('full, incremental, crash → BitmapInconsistent, one at a time, restore and tamper detection', async () => {
    const sim = new SimBackend({ delays: { startMs: 5, guestReadyMs: 5, stopMs: 5, jitter: 0, backupMs: 50 } });
    const target = path.join(tmp, 'sim-backups');
    const disk: DiskSpec = { name: 'root', path: path.join(tmp, 'sim-root.qcow2'), format: 'qcow2', bus: 'virtio' };
    const spec = { ...vm('sim1', [disk]), uid: 'sim1' };
    expect(sim.capabilities()).toContain('backup-cbt');
    await sim.start(spec);
    const s0 = one(await sim.backup({ uid: 'sim1' }, { targetDir: target, type: 'Incremental', pointId: 's0' }));
    expect(s0).toMatchObject({ type: 'Full', reason: 'BitmapMissing', chain: ['s0'] });
    sim.writeDisk('sim1', 'root');
    const running = sim.backup({ uid: 'sim1' }, { targetDir: target, type: 'Incremental', pointId: 's1' });
    await expect(sim.backup({ uid: 'sim1' }, { targetDir: target, type: 'Full' })).rejects.toThrow(/one backup per VM at a time/);
    const s1 = one(await running);
    expect(s1).toMatchObject({ type: 'Incremental', chain: ['s0', 's1'], base: s0.point });
    expect(s1.checksum).not.toBe(s0.checksum);
    expect(await sim.verifyBackup(s1.point)).toMatchObject({ ok: true, chain: ['s0', 's1'] });
    expect((await sim.changeTracking({ uid: 'sim1' }))[0]).toMatchObject({ since: 's1' });

    sim.crash('sim1');
    expect((await sim.changeTracking({ offline: { disks: [disk] } }))[0]).toMatchObject({ fullReason: 'BitmapInconsistent' });
    await sim.cleanup('sim1');
    await sim.start(spec);
    const s2 = one(await sim.backup({ uid: 'sim1' }, { targetDir: target, type: 'Incremental', pointId: 's2' }));
    expect(s2).toMatchObject({ type: 'Full', reason: 'BitmapInconsistent' });
    await expect(sim.backup({ offline: { disks: [disk] } }, { targetDir: target, type: 'Full' })).rejects.toThrow(
      /in use by a running VM/,
    );

    const dest = path.join(tmp, 'sim-restored.img');
    expect(await sim.restore({ point: s1.point, dest, format: 'qcow2' })).toMatchObject({ checksum: s1.checksum });
    fs.writeFileSync(s1.file, fs.readFileSync(s1.file, 'utf8').replace('#1', '#7'));
    await expect(sim.restore({ point: s1.point, dest: `${dest}.2`, format: 'qcow2' })).rejects.toThrow(/checksum mismatch/);
    expect((await sim.verifyBackup(s1.point)).ok).toBe(false);
  });
});
