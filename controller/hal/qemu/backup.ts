/**
 * Backups of QEMU VMs: changed block tracking with persistent dirty bitmaps,
 * point-in-time full and incremental backups of running VMs (through their QMP)
 * and of stopped VMs (through qemu-storage-daemon), checksums, restore, verify.
 *
 * API (Backend methods; types in ../backup-types.ts):
 *   backup({uid} | {offline: {disks, vm?}}, {targetDir, type: 'Full'|'Incremental',
 *          disks?, base?: {disk: manifest}, pointId?, bytesPerSecond?, onProgress?, signal?})
 *     → {pointId, mode, startedAt, completedAt, durationMs,
 *        disks: [{disk, type, reason?, point (manifest), file, base?, chain, size,
 *                 copiedBytes, virtualSize, checksum, copyMs, checksumMs}]}
 *   restore({point, dest, format: 'qcow2'|'raw', inPlace?}) → {dest, format, virtualSize, checksum, durationMs}
 *   verifyBackup(point) → {ok, expected, actual, chain, problems}
 *   changeTracking(source) → per disk {method, bitmaps, since?, fullReason?}
 *   dropChangeTracking(source, disks?)
 *
 * Layout: `<targetDir>/<disk>/<id>.qcow2` (an incremental's backing file is its
 * base, by a relative path), `<id>.sums` (64 KiB chunk digests), `<id>.json`
 * (manifest, written last by atomic rename: a point without one does not exist,
 * and the next backup into that directory sweeps its files away).
 *
 * Bitmaps are checkpoints, as libvirt does it: the bitmap `kubevm-<id>` counts
 * the changes since point <id>. A backup adds the bitmap of its new point in
 * the same QMP `transaction` that starts the copy, so the new bitmap starts at
 * exactly the point in time the copy captures (blockdev-backup copies before
 * write: later guest writes never reach the point). An incremental copies the
 * base's bitmap with sync=bitmap, bitmap-mode=never: QEMU leaves that bitmap as
 * it was plus the writes made during the job, whatever the outcome. Only once
 * the new point's manifest is on disk are the older bitmaps removed. So a
 * failed, cancelled or killed backup loses no changes: the base's bitmap still
 * covers everything since the base, and the new bitmap is dropped (or, after a
 * crash, never persisted). A bitmap QEMU reports inconsistent (left `in-use` by
 * a QEMU that did not close the image) is removed and the backup is Full with
 * reason BitmapInconsistent.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type {
  BackupRequest,
  BackupResult,
  BackupSource,
  DiskBackup,
  DiskTracking,
  MergeRequest,
  MergeResult,
  PointManifest,
  RestoreRequest,
  RestoreResult,
  VerifyResult,
} from '../backup-types';
import {
  algorithmOf,
  CHUNK_SIZE,
  chainSumsChecksum,
  changedDigests,
  chunkCount,
  decodeDelta,
  encodeDelta,
  imageChecksum,
  DEFAULT_ALGORITHM,
  type ChecksumAlgorithm,
} from '../common/checksum';
import {
  allocatedBytes,
  bitmapName,
  BackupLocks,
  chainDirOf,
  checkPointId,
  checkTargetDir,
  fsyncDir,
  fsyncFile,
  fsyncPath,
  finishMerge,
  loadChain,
  mergedManifest,
  newPointId,
  planDisk,
  planMerge,
  pointPaths,
  sweepPartialPoints,
  trackingSummary,
  writeFileSynced,
  writeManifest,
  type DiskPlan,
  type LoadedPoint,
  type PointPaths,
  restoreDest,
  supersededBitmaps,
} from '../common/points';
import { createEmptyQcow2 } from '../common/qcow2';
import { convertImage, imageInUse, rebaseImage, removeBitmap } from '../common/qemuimg';
import type { QmpClient, QmpEvent } from '../common/qmp';
import { HalError, type DiskSpec } from '../types';
import { blockdevJson, diskNode } from './args';
import { cbtOverlayPath, diskForQemu, fileBitmaps, nodeState } from './cbt';
import { startStorageDaemon, type StorageDaemon } from './storage-daemon';

/** A running VM as the backup code needs it (the backend hands it over). */
export interface LiveVm {
  uid: string;
  name: string;
  qmp: QmpClient;
  /** Disks as in the VM's spec (a raw disk with changeTracking runs on its overlay). */
  disks: DiskSpec[];
}

export interface QemuBackupsOptions {
  /** Looks up a running VM; throws HalError when there is none. */
  live(uid: string): LiveVm;
  /**
   * blockdev-backup's x-perf tuning (QEMU 7.2: max-workers, max-chunk,
   * use-copy-range). Default from KUBEVM_BACKUP_X_PERF (JSON), else
   * DEFAULT_X_PERF: 8 copy workers instead of QEMU's 64 copy as fast here
   * (memory-bound, see malloc.ts) and keep 8 MiB of buffers instead of 64.
   */
  xPerf?: Record<string, unknown>;
  /**
   * The chunk digest of new chains (an incremental continues its chain's).
   * Default from KUBEVM_BACKUP_CHECKSUM (blake3 or sha256), else blake3.
   * sha256 is for sites that must use FIPS-approved algorithms.
   */
  checksumAlgorithm?: ChecksumAlgorithm;
}

interface Endpoint {
  mode: 'live' | 'offline';
  qmp: QmpClient;
  vm?: { name?: string; uid?: string };
  /** Offline: quits the storage daemon (persisting bitmaps). */
  close(): Promise<void>;
}

interface DiskJob {
  disk: DiskSpec;
  node: string;
  chainDir: string;
  paths: PointPaths;
  plan: DiskPlan;
  /** The base's chain, Full first (Incremental). */
  baseChain?: LoadedPoint[];
  trackable: boolean;
  virtualSize: number;
  /** Bitmaps of ours on the node before this backup (removed once it succeeded). */
  oldBitmaps: string[];
  targetNode: string;
  jobId: string;
  newBitmap?: string;
  targetAdded?: boolean;
  copiedBytes: number;
  copyMs: number;
  result?: DiskBackup;
}

const DEFAULT_X_PERF: Record<string, unknown> = { 'max-workers': 8 };

function envXPerf(): Record<string, unknown> | undefined {
  const raw = process.env.KUBEVM_BACKUP_X_PERF;
  if (!raw) return undefined;
  try {
    return JSON.parse(raw);
  } catch {
    throw new HalError('Invalid', `KUBEVM_BACKUP_X_PERF: ${JSON.stringify(raw)} must be JSON, e.g. {"max-workers":4}`);
  }
}

function envAlgorithm(): ChecksumAlgorithm {
  const raw = process.env.KUBEVM_BACKUP_CHECKSUM;
  if (raw === undefined || raw === '') return DEFAULT_ALGORITHM;
  if (raw === 'blake3' || raw === 'sha256') return raw;
  throw new HalError('Invalid', `KUBEVM_BACKUP_CHECKSUM: ${JSON.stringify(raw)} must be blake3 or sha256`);
}

const short = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 12);

export class QemuBackups {
  readonly locks = new BackupLocks();
  private readonly xPerf?: Record<string, unknown>;

  private readonly algorithm: ChecksumAlgorithm;

  constructor(private readonly o: QemuBackupsOptions) {
    this.xPerf = o.xPerf ?? envXPerf() ?? DEFAULT_X_PERF;
    this.algorithm = o.checksumAlgorithm ?? envAlgorithm();
  }

  // ---------------------------------------------------------------- backup

  async backup(source: BackupSource, req: BackupRequest): Promise<BackupResult> {
    const t0 = Date.now();
    const targetDir = checkTargetDir(req?.targetDir);
    if (req.type !== 'Full' && req.type !== 'Incremental')
      throw new HalError('Invalid', `type: ${JSON.stringify(req.type)} must be Full or Incremental`);
    const pointId = req.pointId ?? newPointId();
    checkPointId(pointId);
    if (req.bytesPerSecond !== undefined && (!Number.isInteger(req.bytesPerSecond) || req.bytesPerSecond < 0))
      throw new HalError('Invalid', `bytesPerSecond: ${JSON.stringify(req.bytesPerSecond)} must be a non-negative integer`);

    const { disks, label, vm } = this.describe(source);
    const selected = selectDisks(disks, req.disks, label);
    for (const k of Object.keys(req.base ?? {})) {
      if (!selected.some((d) => d.name === k))
        throw new HalError('Invalid', `base.${k}: ${label} has no disk ${k} in this backup`);
      if (req.type !== 'Incremental') throw new HalError('Invalid', `base.${k}: a base point only applies to type Incremental`);
    }
    const release = this.locks.acquire(lockKeys(source, selected), `backup of ${label}`);
    this.locks.inflight.add(pointId);
    let ep: Endpoint | undefined;
    const jobs: DiskJob[] = [];
    try {
      ep = await this.open(source, selected, `backup of ${label}`);
      await reapLeftovers(ep.qmp);
      for (const d of selected) jobs.push(await this.prepare(ep, d, req, targetDir, pointId));
      if (req.signal?.aborted) throw new HalError('Cancelled', `backup of ${label} cancelled before it started`);
      const startedAt = new Date().toISOString();
      await this.copy(ep, jobs, req, pointId);
      for (const j of jobs) await this.finish(ep, j, vm ?? ep.vm, pointId, startedAt);
      // Only now that every manifest is on disk: the old bitmaps are no longer needed.
      for (const j of jobs)
        for (const b of j.oldBitmaps)
          await ep.qmp.execute('block-dirty-bitmap-remove', { node: j.node, name: b }).catch(() => undefined);
      const completedAt = new Date().toISOString();
      return {
        pointId,
        mode: ep.mode,
        startedAt,
        completedAt,
        durationMs: Date.now() - t0,
        disks: jobs.map((j) => j.result!),
      };
    } catch (e: any) {
      if (ep) await this.undo(ep, jobs);
      else for (const j of jobs) removePointFiles(j.paths);
      if (e instanceof HalError) throw e;
      throw new HalError('Failed', `backup of ${label}: ${e?.message ?? e}`);
    } finally {
      if (ep) await ep.close().catch(() => undefined);
      this.locks.inflight.delete(pointId);
      release();
    }
  }

  /** The source's disks (as in its spec), a label for messages and the VM identity. */
  private describe(source: BackupSource): { disks: DiskSpec[]; label: string; vm?: { name?: string; uid?: string } } {
    if (source && 'uid' in source) {
      const v = this.o.live(source.uid);
      return { disks: v.disks, label: `VM ${v.name} (${v.uid})`, vm: { name: v.name, uid: v.uid } };
    }
    if (source && 'offline' in source && Array.isArray(source.offline?.disks)) {
      source.offline.disks.forEach((d, i) => {
        if (!d || typeof d.name !== 'string' || typeof d.path !== 'string' || !d.path.startsWith('/'))
          throw new HalError('Invalid', `offline.disks[${i}]: needs a name and an absolute path`);
        if (d.format !== 'qcow2' && d.format !== 'raw')
          throw new HalError('Invalid', `offline.disks[${i}].format: ${JSON.stringify(d.format)} must be qcow2 or raw`);
      });
      const n = source.offline.vm?.name ?? source.offline.vm?.uid;
      return { disks: source.offline.disks, label: n ? `stopped VM ${n}` : 'stopped VM', vm: source.offline.vm };
    }
    throw new HalError('Invalid', 'source: must be {uid} of a running VM or {offline: {disks}} of a stopped one');
  }

  /** A QMP peer that has the disks open: the VM's QEMU, or a storage daemon for a stopped VM. */
  private async open(source: BackupSource, disks: DiskSpec[], what: string): Promise<Endpoint> {
    if ('uid' in source) {
      const v = this.o.live(source.uid);
      return { mode: 'live', qmp: v.qmp, vm: { name: v.name, uid: v.uid }, close: async () => undefined };
    }
    const blockdevs: Record<string, unknown>[] = [];
    for (const d of disks) blockdevs.push(blockdevJson(await diskForQemu(d)));
    const qsd: StorageDaemon = await startStorageDaemon(blockdevs, what);
    return { mode: 'offline', qmp: qsd.qmp, vm: source.offline.vm, close: () => qsd.close() };
  }

  private async prepare(ep: Endpoint, d: DiskSpec, req: BackupRequest, targetDir: string, pointId: string): Promise<DiskJob> {
    const node = diskNode(d.name);
    const st = await nodeState(ep.qmp, node);
    const chainDir = chainDirOf(targetDir, d.name);
    fs.mkdirSync(chainDir, { recursive: true });
    sweepPartialPoints(chainDir, this.locks.inflight);
    const paths = pointPaths(chainDir, pointId);
    if (fs.existsSync(paths.manifest))
      throw new HalError('AlreadyExists', `point ${pointId} of disk ${d.name} already exists in ${chainDir}`);
    const trackable = st.drv === 'qcow2';
    let plan = planDisk({
      disk: d.name,
      requested: req.type,
      chainDir,
      trackable,
      bitmaps: st.bitmaps,
      virtualSize: st.virtualSize,
      base: req.base?.[d.name],
    });
    let baseChain: LoadedPoint[] | undefined;
    if (plan.base) {
      // Building on a base whose digests no longer add up would carry the damage forward.
      try {
        baseChain = loadChain(plan.base.manifestPath);
        if (chainChecksum(baseChain) !== plan.base.m.checksum) throw new Error('digests do not match');
      } catch {
        plan = { type: 'Full', reason: 'BaseMissing', dropNow: plan.dropNow };
        baseChain = undefined;
      }
    }
    // An inconsistent bitmap can never be used again: drop it now.
    for (const b of plan.dropNow) await ep.qmp.execute('block-dirty-bitmap-remove', { node, name: b });
    const job: DiskJob = {
      disk: d,
      node,
      chainDir,
      paths,
      plan,
      baseChain,
      trackable,
      virtualSize: st.virtualSize,
      oldBitmaps: supersededBitmaps(st.bitmaps, d.name, req.otherChains, plan.dropNow),
      targetNode: `kvbt${short(`${chainDir}/${pointId}`)}`,
      jobId: `kvbk-${short(`${chainDir}/${pointId}`)}`,
      copiedBytes: 0,
      copyMs: 0,
    };
    // The target: an empty qcow2; an incremental's is backed by its base, by a relative path.
    const backing = plan.base ? path.relative(chainDir, plan.base.file) : undefined;
    try {
      createEmptyQcow2(paths.file, st.virtualSize, backing);
      // backing: null: QEMU writes only what it copies and never opens the chain.
      await ep.qmp.execute('blockdev-add', {
        driver: 'qcow2',
        'node-name': job.targetNode,
        // no-flush: qcow2's metadata ordering flushes (an fdatasync per table
        // write-back) are worthless for a point that does not exist until its
        // manifest is written after one fsync of the whole file; they made the
        // copy of a 512 MiB point ~50% slower (docs/benchmarks.md, backup).
        file: { driver: 'file', filename: paths.file, cache: { 'no-flush': true } },
        backing: null,
      });
    } catch (e) {
      removePointFiles(paths);
      throw e;
    }
    job.targetAdded = true;
    return job;
  }

  /** One transaction: each disk's new bitmap and its copy job start at the same instant. */
  private async copy(ep: Endpoint, jobs: DiskJob[], req: BackupRequest, pointId: string): Promise<void> {
    const actions: Record<string, unknown>[] = [];
    for (const j of jobs) {
      if (j.trackable) {
        j.newBitmap = bitmapName(pointId);
        actions.push({ type: 'block-dirty-bitmap-add', data: { node: j.node, name: j.newBitmap, persistent: true } });
      }
      actions.push({
        type: 'blockdev-backup',
        data: {
          device: j.node,
          target: j.targetNode,
          'job-id': j.jobId,
          ...(j.plan.type === 'Incremental'
            ? { sync: 'bitmap', bitmap: j.plan.bitmap, 'bitmap-mode': 'never' }
            : { sync: 'full' }),
          'auto-dismiss': false,
          ...(req.bytesPerSecond ? { speed: req.bytesPerSecond } : {}),
          ...(this.xPerf ? { 'x-perf': this.xPerf } : {}),
        },
      });
    }
    const waiting = waitJobs(ep.qmp, jobs, req);
    waiting.catch(() => undefined);
    const t = Date.now();
    try {
      // Not completion-mode grouped (7.2 refuses it with bitmap actions): if one disk's
      // job fails the others finish, and undo() drops the whole point anyway.
      await ep.qmp.execute('transaction', { actions });
    } catch (e) {
      // Nothing started (a transaction is all or nothing).
      for (const j of jobs) j.newBitmap = undefined;
      waiting.cancel();
      throw e;
    }
    const results = await waiting;
    for (const j of jobs) {
      const r = results.get(j.jobId)!;
      j.copyMs = r.at - t;
      j.copiedBytes = r.total;
    }
    const failed = jobs.map((j) => ({ j, r: results.get(j.jobId)! })).filter((x) => x.r.error);
    if (failed.length) {
      if (req.signal?.aborted) throw new HalError('Cancelled', `backup cancelled: ${String(req.signal.reason ?? 'aborted')}`);
      throw new Error(failed.map((x) => `disk ${x.j.disk.name}: ${x.r.error}`).join('; '));
    }
  }

  /** After a successful copy: release the target, checksum it, write the manifest last. */
  private async finish(
    ep: Endpoint,
    j: DiskJob,
    vm: { name?: string; uid?: string } | undefined,
    pointId: string,
    startedAt: string,
  ): Promise<void> {
    const f0 = Date.now();
    await ep.qmp.execute('job-dismiss', { id: j.jobId }).catch(() => undefined);
    await ep.qmp.execute('blockdev-del', { 'node-name': j.targetNode }); // writes qcow2's cached metadata
    j.targetAdded = false;
    // The point's data goes to stable storage (disk-bound) while its checksum
    // is computed from the page cache (CPU-bound): the two overlap.
    const c0 = Date.now();
    const synced = fsyncPath(j.paths.file).then(() => Date.now());
    synced.catch(() => undefined); // awaited below
    const base = j.plan.base;
    let checksum: string;
    try {
      if (base && j.baseChain) {
        // Only the chunks this point holds are read; the rest of the digests come from the chain.
        const d = await changedDigests(j.paths.file, chainAlgorithm(j.baseChain));
        checksum = chainChecksum(j.baseChain, d.changes);
        writeFileSynced(j.paths.sums, encodeDelta(d.changes));
      } else checksum = (await imageChecksum(j.paths.file, 'qcow2', j.paths.sums, this.algorithm, { point: true })).checksum;
    } finally {
      await synced.catch(() => undefined);
    }
    const checksumMs = Date.now() - c0;
    j.copyMs += (await synced) - f0; // the copy counts until its data is on stable storage
    const chain = [...(base?.m.chain ?? []), pointId];
    const m: PointManifest = {
      kind: 'kubevm.dev/backup-point',
      version: 1,
      id: pointId,
      disk: j.disk.name,
      ...(vm ? { vm } : {}),
      type: j.plan.type,
      ...(j.plan.reason ? { reason: j.plan.reason } : {}),
      file: path.basename(j.paths.file),
      sums: path.basename(j.paths.sums),
      ...(base ? { base: { id: base.m.id, manifest: path.relative(j.chainDir, base.manifestPath) } } : {}),
      chain,
      virtualSize: j.virtualSize,
      sourceFormat: j.disk.format,
      checksum,
      checksumChunkSize: CHUNK_SIZE,
      copiedBytes: j.copiedBytes,
      mode: ep.mode,
      startedAt,
      completedAt: new Date().toISOString(),
    };
    writeManifest(j.paths.manifest, m);
    j.result = {
      disk: j.disk.name,
      type: m.type,
      ...(m.reason ? { reason: m.reason } : {}),
      point: j.paths.manifest,
      file: j.paths.file,
      ...(base ? { base: base.manifestPath } : {}),
      chain,
      size: allocatedBytes(j.paths.file) + allocatedBytes(j.paths.sums) + allocatedBytes(j.paths.manifest),
      copiedBytes: j.copiedBytes,
      virtualSize: j.virtualSize,
      checksum: m.checksum,
      copyMs: j.copyMs,
      checksumMs,
    };
  }

  /** Failure: nothing of the new point may remain; the old bitmaps are untouched. */
  private async undo(ep: Endpoint, jobs: DiskJob[]): Promise<void> {
    const q = ep.qmp;
    for (const j of jobs) {
      if (!q.closed) {
        await q.execute('job-cancel', { id: j.jobId }).catch(() => undefined);
        await q.execute('job-dismiss', { id: j.jobId }).catch(() => undefined);
        if (j.targetAdded) await q.execute('blockdev-del', { 'node-name': j.targetNode }).catch(() => undefined);
        if (j.newBitmap) await q.execute('block-dirty-bitmap-remove', { node: j.node, name: j.newBitmap }).catch(() => undefined);
      }
      removePointFiles(j.paths);
    }
  }

  // ---------------------------------------------------------------- restore / verify

  async restore(req: RestoreRequest): Promise<RestoreResult> {
    const t0 = Date.now();
    const dest = restoreDest(req);
    const chain = loadChainOrThrow(req.point);
    const top = chain[chain.length - 1];
    const exists = fs.existsSync(dest);
    if (req.inPlace) {
      if (!exists) throw new HalError('NotFound', `dest: ${dest} does not exist (inPlace replaces an existing disk)`);
      if (await imageInUse(dest, req.format))
        throw new HalError('WrongState', `dest: ${dest} is in use by another process; stop the VM before restoring in place`);
      const ov = cbtOverlayPath(dest);
      if (fs.existsSync(ov) && (await imageInUse(ov, 'qcow2')))
        throw new HalError('WrongState', `dest: ${dest} is in use through ${ov}; stop the VM before restoring in place`);
    } else if (exists)
      throw new HalError('AlreadyExists', `dest: ${dest} already exists (set inPlace to replace a stopped VM's disk)`);
    if (!fs.existsSync(path.dirname(dest)))
      throw new HalError('NotFound', `dest: directory ${path.dirname(dest)} does not exist`);

    // Written beside dest and renamed over it once verified: dest is never half-written.
    const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.restore-${randomBytes(3).toString('hex')}`);
    try {
      await convertImage(top.file, 'qcow2', tmp, req.format);
      const got = await imageChecksum(tmp, req.format, undefined, algorithmOf(top.m.checksum));
      if (got.checksum !== top.m.checksum || got.virtualSize !== top.m.virtualSize) {
        const damaged = await firstDamaged(chain);
        throw new HalError(
          'Failed',
          `restore of point ${top.m.id} (${top.manifestPath}): checksum mismatch: the manifest says ${top.m.checksum}, ` +
            `the restored content is ${got.checksum}; ${damaged ? `point ${damaged} of the chain was modified or damaged` : 'the chain was modified or damaged'}; nothing was written to ${dest}`,
        );
      }
      fsyncFile(tmp);
      fs.renameSync(tmp, dest);
      fsyncDir(path.dirname(dest));
      // The old overlay's bitmaps describe the old content: the next backup must be Full.
      if (req.inPlace) fs.rmSync(cbtOverlayPath(dest), { force: true });
      return { dest, format: req.format, virtualSize: got.virtualSize, checksum: got.checksum, durationMs: Date.now() - t0 };
    } catch (e: any) {
      fs.rmSync(tmp, { force: true });
      if (e instanceof HalError) throw e;
      throw new HalError('Failed', `restore of point ${top.m.id} to ${dest}: ${e?.message ?? e}`);
    }
  }

  async verify(point: string): Promise<VerifyResult> {
    const r: VerifyResult = { ok: false, point, chain: [], problems: [] };
    let chain: LoadedPoint[];
    try {
      chain = loadChain(point);
    } catch (e: any) {
      r.problems.push(e.message);
      return r;
    }
    const top = chain[chain.length - 1];
    r.chain = chain.map((p) => p.m.id);
    r.expected = top.m.checksum;
    try {
      if (chainChecksum(chain) !== top.m.checksum)
        r.problems.push(`the digest files (.sums) of the chain do not add up to the manifest's checksum (damaged)`);
    } catch (e: any) {
      r.problems.push(`the digest files (.sums) of the chain are unusable: ${e.message}`);
    }
    try {
      const got = await imageChecksum(top.file, 'qcow2', undefined, algorithmOf(top.m.checksum));
      r.actual = got.checksum;
      if (got.checksum !== top.m.checksum) {
        const damaged = await firstDamaged(chain);
        r.problems.push(
          `content checksum ${got.checksum} differs from the manifest's ${top.m.checksum}${damaged ? ` (point ${damaged} was modified or damaged)` : ''}`,
        );
      }
      if (got.virtualSize !== top.m.virtualSize)
        r.problems.push(`virtual size ${got.virtualSize} differs from the manifest's ${top.m.virtualSize}`);
    } catch (e: any) {
      r.problems.push(`reading the chain failed: ${e.message}`);
    }
    r.ok = r.problems.length === 0;
    return r;
  }

  // ---------------------------------------------------------------- merge

  async merge(req: MergeRequest): Promise<MergeResult> {
    const t0 = Date.now();
    const plan = planMerge(req);
    const { chain, top, onto, folded } = plan;
    if (top.m.sim) throw new HalError('Unsupported', `point ${top.m.id} was written by the sim backend`);
    const release = this.locks.acquire([`merge:${top.dir}`], `merge into point ${top.m.id}`);
    try {
      if (folded.length) {
        // Damaged points are not carried forward.
        if (chainChecksum(chain) !== top.m.checksum)
          throw new HalError('Failed', `merge into point ${top.m.id}: the chain's digest files do not add up to its checksum (damaged); nothing was changed`);
        const algo = chainAlgorithm(chain);
        // The new digests first, beside the old ones; then the image; then digests and manifest (atomically).
        // A crash in between leaves the point's content intact (a rebase changes only where it reads from),
        // and the merge is repeated: planMerge finds the same folded points until the manifest says otherwise.
        const tmp = `${top.sums}.merge`;
        if (onto) {
          const changes = new Map<number, Buffer>();
          for (const p of [...folded, top]) decodeDelta(p.sums, chunkCount(top.m.virtualSize), changes);
          writeFileSynced(tmp, encodeDelta(changes));
        } else chainSumsChecksum(chain[0].sums, chain.slice(1).map((p) => p.sums), top.m.virtualSize, undefined, algo, tmp);
        await rebaseImage(top.file, onto ? path.relative(top.dir, onto.file) : '');
        fs.renameSync(tmp, top.sums);
        writeManifest(top.manifestPath, mergedManifest(plan));
      }
      const { chain: after, result } = finishMerge(top, t0);
      if (chainChecksum(after) !== result.checksum)
        throw new HalError('Failed', `merge into point ${top.m.id}: the merged digests do not add up to the point's checksum`);
      return result;
    } finally {
      release();
    }
  }

  // ---------------------------------------------------------------- tracking state

  async changeTracking(source: BackupSource): Promise<DiskTracking[]> {
    const { disks } = this.describe(source);
    const writable = disks.filter((d) => !d.readOnly);
    if ('uid' in source) {
      const { qmp } = this.o.live(source.uid);
      const out: DiskTracking[] = [];
      for (const d of writable) {
        const st = await nodeState(qmp, diskNode(d.name));
        const method = st.drv !== 'qcow2' ? 'none' : d.format === 'raw' ? 'raw-overlay' : 'qcow2-bitmap';
        out.push(trackingSummary(d.name, method, st.bitmaps));
      }
      return out;
    }
    const out: DiskTracking[] = [];
    for (const d of writable) {
      if (d.format === 'qcow2') out.push(trackingSummary(d.name, 'qcow2-bitmap', (await fileBitmaps(d.path)).bitmaps));
      else if (!d.changeTracking) out.push(trackingSummary(d.name, 'none', []));
      else {
        const ov = cbtOverlayPath(d.path);
        const bitmaps = fs.existsSync(ov) ? (await fileBitmaps(ov)).bitmaps : [];
        out.push(trackingSummary(d.name, 'raw-overlay', bitmaps));
      }
    }
    return out;
  }

  async dropChangeTracking(source: BackupSource, names?: string[]): Promise<void> {
    const { disks, label } = this.describe(source);
    const selected = selectDisks(disks, names, label);
    const release = this.locks.acquire(lockKeys(source, selected), `dropping change tracking of ${label}`);
    try {
      if ('uid' in source) {
        const { qmp } = this.o.live(source.uid);
        for (const d of selected) {
          const st = await nodeState(qmp, diskNode(d.name));
          for (const b of st.bitmaps.filter((x) => x.point !== undefined))
            await qmp.execute('block-dirty-bitmap-remove', { node: st.node, name: b.name });
        }
        return;
      }
      for (const d of selected) {
        if (d.format === 'qcow2') {
          for (const b of (await fileBitmaps(d.path)).bitmaps.filter((x) => x.point !== undefined))
            await removeBitmap(d.path, b.name);
        } else {
          const ov = cbtOverlayPath(d.path);
          if (fs.existsSync(ov) && (await imageInUse(ov, 'qcow2')))
            throw new HalError('WrongState', `${ov} is in use by another process (is the VM still running?)`);
          fs.rmSync(ov, { force: true });
        }
      }
    } finally {
      release();
    }
  }
}

// ---------------------------------------------------------------- helpers

function selectDisks(disks: DiskSpec[], names: string[] | undefined, label: string): DiskSpec[] {
  if (names !== undefined && !Array.isArray(names)) throw new HalError('Invalid', 'disks: must be a list of disk names');
  const picked = names
    ? names.map((n) => {
        const d = disks.find((x) => x.name === n);
        if (!d)
          throw new HalError(
            'NotFound',
            `disks: ${label} has no disk ${JSON.stringify(n)} (has: ${disks.map((x) => x.name).join(', ') || 'none'})`,
          );
        if (d.readOnly)
          throw new HalError('Invalid', `disks: disk ${n} of ${label} is read-only; back up the volume it comes from instead`);
        return d;
      })
    : disks.filter((d) => !d.readOnly);
  if (new Set(picked.map((d) => d.name)).size !== picked.length) throw new HalError('Invalid', 'disks: a disk is named twice');
  if (!picked.length) throw new HalError('Invalid', `disks: ${label} has no writable disk to back up`);
  return picked;
}

function lockKeys(source: BackupSource, disks: DiskSpec[]): string[] {
  const keys = disks.map((d) => `disk:${path.resolve(d.path)}`);
  if ('uid' in source) keys.push(`vm:${source.uid}`);
  else if (source.offline.vm?.uid) keys.push(`vm:${source.offline.vm.uid}`);
  return keys;
}

function removePointFiles(p: PointPaths): void {
  for (const f of [p.file, p.sums, p.manifest, `${p.manifest}.tmp`]) fs.rmSync(f, { force: true });
}

function loadChainOrThrow(point: string): LoadedPoint[] {
  if (typeof point !== 'string' || !point.startsWith('/'))
    throw new HalError('Invalid', `point: ${JSON.stringify(point)} must be the absolute path of a point manifest`);
  return loadChain(point);
}

/**
 * A backup whose agent died (or was restarted) mid-copy leaves its job, target
 * node and new bitmap in QEMU. The VM's lock says no backup of ours runs on this
 * QEMU now, so every kubevm job and target node here is such a leftover: cancel
 * and dismiss the job (bitmap-mode never: the base bitmap keeps every change),
 * delete the node. The leftover bitmap has no manifest; the next successful backup
 * removes it with the other old ones.
 */
async function reapLeftovers(qmp: QmpClient): Promise<void> {
  const ours = (list: any[]) => list.filter((j) => typeof j.id === 'string' && j.id.startsWith('kvbk-'));
  const jobs = ours(await qmp.execute<any[]>('query-jobs'));
  for (const j of jobs) if (j.status !== 'concluded') await qmp.execute('job-cancel', { id: j.id }).catch(() => undefined);
  const end = Date.now() + 30_000;
  while (ours(await qmp.execute<any[]>('query-jobs')).some((j) => j.status !== 'concluded') && Date.now() < end)
    await new Promise((r) => setTimeout(r, 50));
  for (const j of jobs) await qmp.execute('job-dismiss', { id: j.id }).catch(() => undefined);
  const nodes = await qmp.execute<any[]>('query-named-block-nodes', { flat: true });
  for (const n of nodes.filter((x) => /^kvbt[0-9a-f]{12}$/.test(x['node-name'])))
    await qmp.execute('blockdev-del', { 'node-name': n['node-name'] }).catch(() => undefined);
}

/** The checksum the digest files of a chain (Full first) give, with `extra` digests laid over them. */
function chainChecksum(chain: LoadedPoint[], extra?: Map<number, Buffer>): string {
  if (chain[0].m.type !== 'Full') throw new Error(`chain starts with ${chain[0].m.id}, an ${chain[0].m.type}`);
  if (chain.some((p) => p.m.checksumChunkSize !== CHUNK_SIZE))
    throw new Error(`a point of the chain uses chunks other than ${CHUNK_SIZE} bytes`);
  return chainSumsChecksum(
    chain[0].sums,
    chain.slice(1).map((p) => p.sums),
    chain[0].m.virtualSize,
    extra,
    chainAlgorithm(chain),
  );
}

/** The checksum algorithm of a chain: its Full's; every point of it must use the same. */
function chainAlgorithm(chain: LoadedPoint[]): ChecksumAlgorithm {
  const algo = algorithmOf(chain[0].m.checksum);
  for (const p of chain)
    if (algorithmOf(p.m.checksum) !== algo)
      throw new Error(`point ${p.m.id} uses ${algorithmOf(p.m.checksum)}, its chain's Full uses ${algo}`);
  return algo;
}

/** The first point of a chain (base first) whose own content no longer matches its manifest. */
async function firstDamaged(chain: LoadedPoint[]): Promise<string | undefined> {
  for (const p of chain) {
    try {
      const got = await imageChecksum(p.file, 'qcow2', undefined, algorithmOf(p.m.checksum));
      if (got.checksum !== p.m.checksum) return p.m.id;
    } catch {
      return p.m.id;
    }
  }
  return undefined;
}

interface JobEnd {
  /** Date.now() when the job concluded. */
  at: number;
  total: number;
  error?: string;
}

type JobWait = Promise<Map<string, JobEnd>> & { cancel(): void };

/**
 * Waits until every job has concluded, from JOB_STATUS_CHANGE events, with a
 * once-a-second query-jobs for progress (and in case an event is missed).
 * Rejects if QEMU goes away. An abort signal cancels the jobs (they then
 * conclude with an error, which the caller turns into Cancelled).
 */
function waitJobs(qmp: QmpClient, jobs: DiskJob[], req: BackupRequest): JobWait {
  const ids = new Set(jobs.map((j) => j.jobId));
  const concluded = new Map<string, number>();
  let stop = () => {};
  const p = new Promise<Map<string, JobEnd>>((resolve, reject) => {
    let settled = false;
    const finish = async () => {
      if (settled) return;
      settled = true;
      cleanup();
      try {
        const list = await qmp.execute<any[]>('query-jobs');
        const out = new Map<string, JobEnd>();
        for (const id of ids) {
          const j = list.find((x) => x.id === id);
          out.set(id, {
            at: concluded.get(id) ?? Date.now(),
            total: j?.['total-progress'] ?? 0,
            error: j ? j.error : 'the job disappeared',
          });
        }
        resolve(out);
      } catch (e) {
        reject(e);
      }
    };
    const onEvent = (e: QmpEvent) => {
      if (e.event !== 'JOB_STATUS_CHANGE' || !ids.has(e.data?.id) || e.data?.status !== 'concluded') return;
      concluded.set(e.data.id, Date.now());
      if (concluded.size === ids.size) void finish();
    };
    const onClose = () => {
      if (settled) return;
      settled = true;
      cleanup();
      reject(new HalError('Failed', 'QEMU went away during the backup (QMP connection closed); no point was written'));
    };
    const onAbort = () => {
      for (const id of ids) void qmp.execute('job-cancel', { id }).catch(() => undefined);
    };
    const poll = setInterval(async () => {
      try {
        const list = await qmp.execute<any[]>('query-jobs');
        for (const j of jobs) {
          const x = list.find((y) => y.id === j.jobId);
          if (!x) continue;
          if (x.status === 'concluded' && !concluded.has(x.id)) concluded.set(x.id, Date.now());
          req.onProgress?.({ disk: j.disk.name, done: x['current-progress'], total: x['total-progress'] });
        }
        if (concluded.size === ids.size) void finish();
      } catch {
        /* closed: onClose reports it */
      }
    }, 1000);
    const cleanup = () => {
      clearInterval(poll);
      qmp.off('event', onEvent);
      qmp.off('close', onClose);
      req.signal?.removeEventListener('abort', onAbort);
    };
    stop = () => {
      if (!settled) {
        settled = true;
        cleanup();
      }
    };
    qmp.on('event', onEvent);
    qmp.on('close', onClose);
    if (req.signal?.aborted) onAbort();
    else req.signal?.addEventListener('abort', onAbort, { once: true });
  });
  return Object.assign(p, { cancel: () => stop() });
}
