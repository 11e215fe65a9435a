import * as fs from 'node:fs';
import * as path from 'node:path';
import type {
  BackupRequest,
  BackupResult,
  BackupSource,
  DiskTracking,
  MergeRequest,
  MergeResult,
  PointManifest,
  RestoreRequest,
  RestoreResult,
  TrackingBitmap,
  VerifyResult,
} from '../backup-types';
import { algorithmOf, CHUNK_SIZE, checksumOf, chunkDigest } from '../common/checksum';
import {
  allocatedBytes,
  BackupLocks,
  bitmapName,
  bitmapPoint,
  chainDirOf,
  checkPointId,
  checkTargetDir,
  finishMerge,
  loadChain,
  mergedManifest,
  newPointId,
  planDisk,
  planMerge,
  pointPaths,
  readSums,
  sweepPartialPoints,
  trackingSummary,
  writeFileSynced,
  writeManifest,
  type LoadedPoint,
  restoreDest,
  supersededBitmaps,
} from '../common/points';
import { HalError, type DiskSpec } from '../types';

/**
 * Backups on the sim backend: the same bookkeeping as the qemu backend (chain
 * directories, manifests written last, bitmaps named after points, the Full
 * reasons, one backup per VM, sweeping of half-written points) without images.
 * A point's `.sim` file holds a small JSON description of the disk content
 * (a content id that changes when a test calls SimBackend.writeDisk), its
 * checksum is computed over that description, and a restore writes it out again.
 * A crash of a VM (SimBackend.crash) makes its disks' bitmaps inconsistent, as a
 * kill -9 of QEMU does. For scale tests of the controller and agent.
 */
interface SimBitmap {
  name: string;
  inconsistent: boolean;
}

/** Per disk path, shared by all backend instances of a world (disks outlive agents). */
export interface SimDiskState {
  bitmaps: SimBitmap[];
  /** Changes with every simulated write. */
  content: number;
}

export interface SimBackupHost {
  disks(): Map<string, SimDiskState>;
  /** A running VM's uid, name and disks; throws HalError when there is none. */
  live(uid: string): { uid: string; name: string; disks: DiskSpec[] };
  /** True if a running VM has that disk path attached. */
  inUse(diskPath: string): boolean;
  /** Simulated copy time. */
  backupMs(): number;
}

const SIM_SIZE = 1 << 30; // nominal size of a disk whose file does not exist

function contentOf(diskPath: string, n: number): string {
  return `sim-disk:${diskPath}#${n}`;
}

function sumsOf(content: string): Buffer {
  return chunkDigest(Buffer.from(content));
}

export class SimBackups {
  readonly locks = new BackupLocks();

  constructor(private readonly h: SimBackupHost) {}

  private state(p: string): SimDiskState {
    let s = this.h.disks().get(p);
    if (!s) this.h.disks().set(p, (s = { bitmaps: [], content: 0 }));
    return s;
  }

  /** Simulates guest writes to a disk: its content id changes (the next point differs). */
  write(diskPath: string): void {
    this.state(diskPath).content++;
  }

  /** A kill -9: the bitmaps the VM had open are left in use, hence inconsistent. */
  crashed(disks: DiskSpec[]): void {
    for (const d of disks) for (const b of this.state(d.path).bitmaps) b.inconsistent = true;
  }

  private describe(source: BackupSource): {
    disks: DiskSpec[];
    label: string;
    vm?: { name?: string; uid?: string };
    live: boolean;
  } {
    if (source && 'uid' in source) {
      const v = this.h.live(source.uid);
      return { disks: v.disks, label: `VM ${v.name} (${v.uid})`, vm: { name: v.name, uid: v.uid }, live: true };
    }
    if (source && 'offline' in source && Array.isArray(source.offline?.disks)) {
      for (const d of source.offline.disks)
        if (this.h.inUse(d.path)) throw new HalError('WrongState', `disk ${d.name} (${d.path}) is in use by a running VM`);
      return { disks: source.offline.disks, label: 'stopped VM', vm: source.offline.vm, live: false };
    }
    throw new HalError('Invalid', 'source: must be {uid} of a running VM or {offline: {disks}} of a stopped one');
  }

  private trackable(d: DiskSpec): boolean {
    return d.format === 'qcow2' || d.changeTracking === true;
  }

  private bitmaps(d: DiskSpec): TrackingBitmap[] {
    return this.state(d.path).bitmaps.map((b) => ({ name: b.name, point: bitmapPoint(b.name), inconsistent: b.inconsistent }));
  }

  async backup(source: BackupSource, req: BackupRequest): Promise<BackupResult> {
    const t0 = Date.now();
    const targetDir = checkTargetDir(req?.targetDir);
    if (req.type !== 'Full' && req.type !== 'Incremental')
      throw new HalError('Invalid', `type: ${JSON.stringify(req.type)} must be Full or Incremental`);
    const pointId = req.pointId ?? newPointId();
    checkPointId(pointId);
    const { disks, label, vm, live } = this.describe(source);
    const selected = (req.disks ?? disks.filter((d) => !d.readOnly).map((d) => d.name)).map((n) => {
      const d = disks.find((x) => x.name === n);
      if (!d) throw new HalError('NotFound', `disks: ${label} has no disk ${JSON.stringify(n)}`);
      return d;
    });
    if (!selected.length) throw new HalError('Invalid', `disks: ${label} has no writable disk to back up`);
    const keys = selected.map((d) => `disk:${d.path}`);
    if ('uid' in source) keys.push(`vm:${source.uid}`);
    const release = this.locks.acquire(keys, `backup of ${label}`);
    this.locks.inflight.add(pointId);
    const written: string[] = [];
    try {
      const startedAt = new Date().toISOString();
      const plans = selected.map((d) => {
        const chainDir = chainDirOf(targetDir, d.name);
        fs.mkdirSync(chainDir, { recursive: true });
        sweepPartialPoints(chainDir, this.locks.inflight);
        let size = SIM_SIZE;
        try {
          size = fs.statSync(d.path).size || SIM_SIZE;
        } catch {
          /* no file: a nominal size */
        }
        const plan = planDisk({
          disk: d.name,
          requested: req.type,
          chainDir,
          trackable: this.trackable(d),
          bitmaps: this.bitmaps(d),
          virtualSize: size,
          base: req.base?.[d.name],
        });
        return { d, chainDir, plan, size, paths: pointPaths(chainDir, pointId, '.sim') };
      });
      await new Promise((r) => setTimeout(r, this.h.backupMs()));
      if (req.signal?.aborted) throw new HalError('Cancelled', `backup of ${label} cancelled`);
      const out = plans.map(({ d, chainDir, plan, size, paths }) => {
        if (fs.existsSync(paths.manifest))
          throw new HalError('AlreadyExists', `point ${pointId} of disk ${d.name} already exists`);
        const content = contentOf(d.path, this.state(d.path).content);
        written.push(paths.file, paths.sums, paths.manifest);
        fs.writeFileSync(paths.file, JSON.stringify({ kind: 'kubevm-sim-image', disk: d.name, content }) + '\n');
        const sums = sumsOf(content);
        writeFileSynced(paths.sums, sums);
        const chain = [...(plan.base?.m.chain ?? []), pointId];
        const m: PointManifest = {
          kind: 'kubevm.dev/backup-point',
          version: 1,
          id: pointId,
          disk: d.name,
          ...(vm ? { vm } : {}),
          type: plan.type,
          ...(plan.reason ? { reason: plan.reason } : {}),
          file: path.basename(paths.file),
          sums: path.basename(paths.sums),
          ...(plan.base ? { base: { id: plan.base.m.id, manifest: path.relative(chainDir, plan.base.manifestPath) } } : {}),
          chain,
          virtualSize: size,
          sourceFormat: d.format,
          checksum: checksumOf(sums),
          checksumChunkSize: CHUNK_SIZE,
          copiedBytes: 0,
          mode: live ? 'live' : 'offline',
          startedAt,
          completedAt: new Date().toISOString(),
          sim: true,
        };
        writeManifest(paths.manifest, m);
        return {
          disk: d.name,
          type: m.type,
          ...(m.reason ? { reason: m.reason } : {}),
          point: paths.manifest,
          file: paths.file,
          ...(plan.base ? { base: plan.base.manifestPath } : {}),
          chain,
          size: allocatedBytes(paths.file) + allocatedBytes(paths.sums) + allocatedBytes(paths.manifest),
          copiedBytes: 0,
          virtualSize: size,
          checksum: m.checksum,
          copyMs: 0,
          checksumMs: 0,
        };
      });
      // The new bitmap replaces the old ones, once every manifest is written.
      for (const { d } of plans)
        if (this.trackable(d)) {
          const st = this.state(d.path);
          const gone = supersededBitmaps(this.bitmaps(d), d.name, req.otherChains);
          st.bitmaps = [...st.bitmaps.filter((b) => !gone.includes(b.name) && !b.inconsistent), { name: bitmapName(pointId), inconsistent: false }];
        }
      return {
        pointId,
        mode: live ? 'live' : 'offline',
        startedAt,
        completedAt: new Date().toISOString(),
        durationMs: Date.now() - t0,
        disks: out,
      };
    } catch (e) {
      for (const f of written) fs.rmSync(f, { force: true });
      throw e;
    } finally {
      this.locks.inflight.delete(pointId);
      release();
    }
  }

  private check(p: LoadedPoint): { content: string; checksum: string } {
    if (!p.m.sim) throw new HalError('Unsupported', `point ${p.manifestPath} was not written by the sim backend`);
    const img = JSON.parse(fs.readFileSync(p.file, 'utf8'));
    const content = String(img.content);
    return { content, checksum: checksumOf(sumsOf(content)) };
  }

  async restore(req: RestoreRequest): Promise<RestoreResult> {
    const t0 = Date.now();
    const dest = restoreDest(req);
    const chain = loadChain(req.point);
    const top = chain[chain.length - 1];
    if (req.inPlace && !fs.existsSync(dest)) throw new HalError('NotFound', `dest: ${dest} does not exist`);
    if (!req.inPlace && fs.existsSync(dest)) throw new HalError('AlreadyExists', `dest: ${dest} already exists`);
    if (req.inPlace && this.h.inUse(dest)) throw new HalError('WrongState', `dest: ${dest} is in use by a running VM`);
    const got = this.check(top);
    if (got.checksum !== top.m.checksum)
      throw new HalError(
        'Failed',
        `restore of point ${top.m.id}: checksum mismatch (manifest ${top.m.checksum}, content ${got.checksum})`,
      );
    fs.writeFileSync(dest, JSON.stringify({ kind: 'kubevm-sim-image', content: got.content }) + '\n');
    if (req.inPlace) this.state(dest).bitmaps = [];
    return { dest, format: req.format, virtualSize: top.m.virtualSize, checksum: got.checksum, durationMs: Date.now() - t0 };
  }

  /** A sim point holds its whole content: a merge only shortens the chain in its manifest. */
  async merge(req: MergeRequest): Promise<MergeResult> {
    const t0 = Date.now();
    const plan = planMerge(req);
    if (plan.folded.length) writeManifest(plan.top.manifestPath, mergedManifest(plan));
    return finishMerge(plan.top, t0).result;
  }

  async verify(point: string): Promise<VerifyResult> {
    const r: VerifyResult = { ok: false, point, chain: [], problems: [] };
    try {
      const chain = loadChain(point);
      const top = chain[chain.length - 1];
      r.chain = chain.map((p) => p.m.id);
      r.expected = top.m.checksum;
      readSums(top, (b) => checksumOf(b, algorithmOf(top.m.checksum)));
      r.actual = this.check(top).checksum;
      if (r.actual !== r.expected) r.problems.push(`content checksum ${r.actual} differs from the manifest's ${r.expected}`);
    } catch (e: any) {
      r.problems.push(e.message);
    }
    r.ok = r.problems.length === 0;
    return r;
  }

  async changeTracking(source: BackupSource): Promise<DiskTracking[]> {
    const { disks } = this.describe(source);
    return disks
      .filter((d) => !d.readOnly)
      .map((d) =>
        trackingSummary(
          d.name,
          !this.trackable(d) ? 'none' : d.format === 'raw' ? 'raw-overlay' : 'qcow2-bitmap',
          this.bitmaps(d),
        ),
      );
  }

  async dropChangeTracking(source: BackupSource, names?: string[]): Promise<void> {
    const { disks } = this.describe(source);
    for (const d of disks) if (!names || names.includes(d.name)) this.state(d.path).bitmaps = [];
  }
}
