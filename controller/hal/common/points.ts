import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import type { BackupType, DiskTracking, FullBackupReason, MergeResult, PointManifest, TrackingBitmap } from '../backup-types';
import { HalError } from '../types';
import { normalisePath } from './paths';

/**
 * Backend-neutral bookkeeping of backup points: names, manifests (validated,
 * written last and atomically), chains, the sweep of half-written points, the
 * one-backup-at-a-time locks, and the decision Full vs Incremental. The qemu
 * and sim backends both build on it, so they agree on every rule.
 */
export const BITMAP_PREFIX = 'kubevm-';
const POINT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const MANIFEST_KIND = 'kubevm.dev/backup-point';

export function bitmapName(pointId: string): string {
  return `${BITMAP_PREFIX}${pointId}`;
}

/** The point id a kubevm bitmap counts from, or undefined for someone else's bitmap. */
export function bitmapPoint(name: string): string | undefined {
  return name.startsWith(BITMAP_PREFIX) ? name.slice(BITMAP_PREFIX.length) : undefined;
}

/** Sortable and unique: UTC time to the millisecond plus 4 random hex digits. */
export function newPointId(now = new Date()): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace('.', '');
  return `${t}-${randomBytes(2).toString('hex')}`;
}

export function checkPointId(id: string, field = 'pointId'): void {
  if (typeof id !== 'string' || !POINT_ID.test(id))
    throw new HalError(
      'Invalid',
      `${field}: ${JSON.stringify(id)} must be 1-100 letters, digits, ".", "_" or "-", starting with a letter or digit`,
    );
}

export interface PointPaths {
  dir: string;
  file: string;
  sums: string;
  manifest: string;
}

export function pointPaths(chainDir: string, id: string, fileExt = '.qcow2'): PointPaths {
  return {
    dir: chainDir,
    file: path.join(chainDir, `${id}${fileExt}`),
    sums: path.join(chainDir, `${id}.sums`),
    manifest: path.join(chainDir, `${id}.json`),
  };
}

/** `<targetDir>/<disk>`: the chain directory of one disk. */
export function chainDirOf(targetDir: string, disk: string): string {
  return path.join(targetDir, disk);
}

export function checkTargetDir(targetDir: string): string {
  if (typeof targetDir !== 'string' || !targetDir.startsWith('/'))
    throw new HalError('Invalid', `targetDir: ${JSON.stringify(targetDir)} must be an absolute path`);
  if (targetDir.split('/').includes('..'))
    throw new HalError(
      'Invalid',
      `targetDir: ${JSON.stringify(targetDir)} contains ".." (paths may not climb out of a directory)`,
    );
  return path.normalize(targetDir);
}

function problem(p: string, msg: string): HalError {
  return new HalError('Invalid', `backup point ${p}: ${msg}`);
}

/** Reads and checks a manifest; throws HalError('Invalid'|'NotFound') naming the file and the problem. */
export function readManifest(manifestPath: string): PointManifest {
  let raw: string;
  try {
    raw = fs.readFileSync(manifestPath, 'utf8');
  } catch (e: any) {
    if (e?.code === 'ENOENT')
      throw new HalError('NotFound', `backup point ${manifestPath}: no manifest (a point without one is incomplete)`);
    throw problem(manifestPath, `cannot read the manifest (${e?.code ?? e})`);
  }
  let m: any;
  try {
    m = JSON.parse(raw);
  } catch {
    throw problem(manifestPath, 'the manifest is not valid JSON');
  }
  if (m?.kind !== MANIFEST_KIND || m.version !== 1) throw problem(manifestPath, `not a ${MANIFEST_KIND} v1 manifest`);
  for (const k of ['id', 'disk', 'file', 'sums', 'checksum', 'startedAt', 'completedAt'] as const)
    if (typeof m[k] !== 'string' || !m[k]) throw problem(manifestPath, `field ${k} is missing`);
  if (m.type !== 'Full' && m.type !== 'Incremental') throw problem(manifestPath, `field type must be Full or Incremental`);
  if (!Number.isInteger(m.virtualSize) || m.virtualSize <= 0)
    throw problem(manifestPath, 'field virtualSize must be a positive integer');
  if (!Array.isArray(m.chain) || m.chain[m.chain.length - 1] !== m.id)
    throw problem(manifestPath, 'field chain must end with the point id');
  if (m.type === 'Incremental' && (typeof m.base?.id !== 'string' || typeof m.base?.manifest !== 'string'))
    throw problem(manifestPath, 'an Incremental needs base.id and base.manifest');
  for (const k of ['file', 'sums'] as const)
    if (m[k].includes('/')) throw problem(manifestPath, `field ${k} must be a file name in the manifest's directory`);
  return m as PointManifest;
}

/** Writes the manifest last and atomically: temp file, fsync, rename, fsync of the directory. */
export function writeManifest(manifestPath: string, m: PointManifest): void {
  const tmp = `${manifestPath}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, JSON.stringify(m, null, 1) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, manifestPath);
  fsyncDir(path.dirname(manifestPath));
}

export function writeFileSynced(p: string, data: Buffer): void {
  const fd = fs.openSync(p, 'w');
  try {
    fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsync of a file on the thread pool (the event loop and other work go on meanwhile). */
export async function fsyncPath(p: string): Promise<void> {
  const h = await fsp.open(p, 'r+');
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

export function fsyncFile(p: string): void {
  const fd = fs.openSync(p, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function fsyncDir(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    /* some filesystems refuse fsync on directories; the rename is still atomic */
  }
}

export interface LoadedPoint {
  manifestPath: string;
  dir: string;
  m: PointManifest;
  file: string;
  sums: string;
}

export function loadPoint(manifestPath: string): LoadedPoint {
  const abs = path.resolve(manifestPath);
  const m = readManifest(abs);
  const dir = path.dirname(abs);
  return { manifestPath: abs, dir, m, file: path.join(dir, m.file), sums: path.join(dir, m.sums) };
}

/**
 * The point and every point it depends on, base (the Full) first. Each must
 * have its manifest and files; the chain named in each manifest must agree.
 */
export function loadChain(manifestPath: string): LoadedPoint[] {
  const out: LoadedPoint[] = [];
  let cur: LoadedPoint | undefined = loadPoint(manifestPath);
  const seen = new Set<string>();
  while (cur) {
    if (seen.has(cur.manifestPath)) throw problem(manifestPath, `the chain loops at ${cur.manifestPath}`);
    seen.add(cur.manifestPath);
    for (const f of [cur.file, cur.sums])
      if (!fs.existsSync(f)) throw problem(cur.manifestPath, `file ${path.basename(f)} is missing`);
    out.unshift(cur);
    if (cur.m.type === 'Full') break;
    const basePath: string = path.resolve(cur.dir, cur.m.base!.manifest);
    let base: LoadedPoint;
    try {
      base = loadPoint(basePath);
    } catch (e: any) {
      throw problem(cur.manifestPath, `its base ${cur.m.base!.id} is unusable: ${e.message}`);
    }
    if (base.m.id !== cur.m.base!.id)
      throw problem(cur.manifestPath, `its base manifest ${basePath} is point ${base.m.id}, not ${cur.m.base!.id}`);
    cur = base;
  }
  const ids = out.map((p) => p.m.id);
  const top = out[out.length - 1];
  if (JSON.stringify(ids) !== JSON.stringify(top.m.chain))
    throw problem(top.manifestPath, `its chain ${top.m.chain.join(' → ')} does not match the files (${ids.join(' → ')})`);
  return out;
}

/** What a merge does to a chain: the kept point, its new base (undefined: none) and the points folded in. */
export interface MergePlan {
  chain: LoadedPoint[];
  top: LoadedPoint;
  onto?: LoadedPoint;
  /** Oldest first. Empty: already merged (a merge is repeated after a crash). */
  folded: LoadedPoint[];
}

export function planMerge(req: { point?: unknown; onto?: unknown }): MergePlan {
  if (typeof req?.point !== 'string' || !req.point.startsWith('/'))
    throw new HalError('Invalid', `point: ${JSON.stringify(req?.point)} must be the absolute path of a point's manifest`);
  if (req.onto !== undefined && (typeof req.onto !== 'string' || !req.onto.startsWith('/')))
    throw new HalError('Invalid', `onto: ${JSON.stringify(req.onto)} must be the absolute path of a point's manifest, or absent`);
  const chain = loadChain(req.point);
  const top = chain[chain.length - 1];
  let idx = -1;
  if (req.onto !== undefined) {
    const want = path.resolve(req.onto as string);
    idx = chain.findIndex((p) => p.manifestPath === want);
    if (idx < 0) throw new HalError('Invalid', `onto: ${want} is not a point of the chain of ${top.m.id} (${top.m.chain.join(' → ')})`);
    if (idx === chain.length - 1) throw new HalError('Invalid', `onto: ${want} is the point itself`);
  }
  return { chain, top, onto: idx >= 0 ? chain[idx] : undefined, folded: chain.slice(idx + 1, -1) };
}

/** The kept point's manifest after the merge: same content and checksum, a shorter chain. */
export function mergedManifest(p: MergePlan): PointManifest {
  const { top, onto, folded } = p;
  const m: PointManifest = { ...top.m };
  delete m.base;
  if (onto) {
    m.type = 'Incremental';
    m.base = { id: onto.m.id, manifest: path.relative(top.dir, onto.manifestPath) };
    m.chain = [...onto.m.chain, top.m.id];
  } else {
    m.type = 'Full';
    m.chain = [top.m.id];
  }
  m.mergedFrom = [...new Set([...(top.m.mergedFrom ?? []), ...folded.flatMap((f) => [...(f.m.mergedFrom ?? []), f.m.id])])];
  return m;
}

/**
 * After a merge into `top`: the points built on it (in its directory) list
 * their chain from the Full; their lists now go through top's shorter chain.
 * Each manifest is rewritten atomically; a merge repeated after a crash
 * finishes what is left.
 */
function rechainDescendants(top: LoadedPoint): void {
  for (const f of fs.readdirSync(top.dir)) {
    if (!f.endsWith('.json')) continue;
    const p = path.join(top.dir, f);
    let m: PointManifest;
    try {
      m = readManifest(p);
    } catch {
      continue; // not a manifest, or a half-written one the sweep removes
    }
    const at = m.chain.indexOf(top.m.id);
    if (at < 0 || m.id === top.m.id) continue;
    const chain = [...top.m.chain, ...m.chain.slice(at + 1)];
    if (JSON.stringify(chain) === JSON.stringify(m.chain)) continue;
    writeManifest(p, { ...m, chain });
  }
}

/** After a merge: the later points re-chained, the kept point's chain reloaded (base first), and the result. */
export function finishMerge(top: LoadedPoint, t0: number): { chain: LoadedPoint[]; result: MergeResult } {
  rechainDescendants(loadPoint(top.manifestPath));
  const chain = loadChain(top.manifestPath);
  const now = chain[chain.length - 1];
  return {
    chain,
    result: {
      point: now.manifestPath,
      type: now.m.type,
      ...(now.m.base ? { base: path.resolve(now.dir, now.m.base.manifest) } : {}),
      chain: now.m.chain,
      mergedFrom: now.m.mergedFrom ?? [],
      size: allocatedBytes(now.file) + allocatedBytes(now.sums) + allocatedBytes(now.manifestPath),
      checksum: now.m.checksum,
      durationMs: Date.now() - t0,
    },
  };
}

/** Reads a point's digests, checking them against its manifest's checksum. */
export function readSums(p: LoadedPoint, checksumOf: (s: Buffer) => string): Buffer {
  const sums = fs.readFileSync(p.sums);
  if (checksumOf(sums) !== p.m.checksum)
    throw problem(p.manifestPath, `its ${p.m.sums} does not match the manifest's checksum (damaged)`);
  return sums;
}

/** Bytes a file occupies on disk (allocated blocks), 0 if absent. */
export function allocatedBytes(p: string): number {
  try {
    return fs.statSync(p).blocks * 512;
  } catch {
    return 0;
  }
}

/** Removes point files without a manifest (left by a crash mid-backup), except `keep` ids. */
export function sweepPartialPoints(chainDir: string, keep: ReadonlySet<string>): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(chainDir);
  } catch {
    return [];
  }
  const complete = new Set(names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5)));
  const removed: string[] = [];
  for (const n of names) {
    const m = /^(.+?)\.(qcow2|sums|sim|json\.tmp)$/.exec(n);
    if (!m || complete.has(m[1]) || keep.has(m[1])) continue;
    fs.rmSync(path.join(chainDir, n), { force: true });
    removed.push(n);
  }
  return removed;
}

/** The newest complete point of a chain directory whose id is in `ids`. */
export function newestPointAmong(chainDir: string, ids: string[]): LoadedPoint | undefined {
  let best: LoadedPoint | undefined;
  for (const id of ids) {
    const mp = path.join(chainDir, `${id}.json`);
    if (!fs.existsSync(mp)) continue;
    try {
      const p = loadPoint(mp);
      if (!best || p.m.completedAt > best.m.completedAt) best = p;
    } catch {
      /* an unreadable manifest is not a base */
    }
  }
  return best;
}

/** Serialises backups: one per VM (and per disk file) at a time, per backend instance. */
export class BackupLocks {
  private readonly held = new Map<string, { what: string; since: number }>();
  /** Point ids being written now (the sweep must leave them alone). */
  readonly inflight = new Set<string>();

  acquire(keys: string[], what: string): () => void {
    for (const k of keys) {
      const h = this.held.get(k);
      if (h)
        throw new HalError(
          'WrongState',
          `${what}: ${h.what} is already running (since ${new Date(h.since).toISOString()}); one backup per VM at a time`,
        );
    }
    const since = Date.now();
    for (const k of keys) this.held.set(k, { what, since });
    return () => keys.forEach((k) => this.held.delete(k));
  }

  busy(key: string): boolean {
    return this.held.has(key);
  }
}

export interface DiskPlanInput {
  disk: string;
  requested: BackupType;
  chainDir: string;
  /** Can this disk carry a persistent bitmap at all? */
  trackable: boolean;
  /** The disk's bitmaps (all of them; only kubevm-* are considered). */
  bitmaps: TrackingBitmap[];
  virtualSize: number;
  /** Base manifest the caller named, if any. */
  base?: string;
}

export interface DiskPlan {
  type: BackupType;
  reason?: FullBackupReason;
  base?: LoadedPoint;
  /** Bitmap to copy the changes of (Incremental). */
  bitmap?: string;
  /** kubevm bitmaps to drop before the backup (inconsistent: unusable for good). */
  dropNow: string[];
}

/** Decides Full or Incremental for one disk, and says why when it must be Full. */
export function planDisk(i: DiskPlanInput): DiskPlan {
  const ours = i.bitmaps.filter((b) => b.point !== undefined);
  const inconsistent = ours.filter((b) => b.inconsistent).map((b) => b.name);
  const full = (reason?: FullBackupReason): DiskPlan => ({
    type: 'Full',
    reason: i.requested === 'Incremental' ? reason : undefined,
    dropNow: inconsistent,
  });
  if (!i.trackable) return full('ChangeTrackingUnavailable');
  if (i.requested === 'Full') return full();
  const usable = ours.filter((b) => !b.inconsistent);
  let base: LoadedPoint | undefined;
  if (i.base) {
    try {
      base = loadPoint(i.base);
    } catch {
      return full('BaseMissing');
    }
    if (base.m.disk !== i.disk) throw new HalError('Invalid', `base.${i.disk}: ${i.base} is a point of disk ${base.m.disk}`);
  } else {
    base = newestPointAmong(
      i.chainDir,
      usable.map((b) => b.point!),
    );
  }
  // Inconsistency is the stronger signal: the VM crashed while tracking, whatever the base.
  const baseBitmap = base && ours.find((b) => b.point === base!.m.id);
  if (baseBitmap?.inconsistent || (!baseBitmap && inconsistent.length)) return full('BitmapInconsistent');
  if (!base) return full(usable.length ? 'BaseMissing' : 'BitmapMissing');
  if (!baseBitmap) return full(i.base && usable.length ? 'BaseMismatch' : 'BitmapMissing');
  if (base.m.virtualSize !== i.virtualSize) return full('DiskResized');
  try {
    loadChain(base.manifestPath);
  } catch {
    return full('BaseMissing');
  }
  return { type: 'Incremental', base, bitmap: baseBitmap.name, dropNow: inconsistent };
}

/** What the next backup of a disk can be, from its bitmaps alone (no chain directory). */
export function trackingSummary(disk: string, method: DiskTracking['method'], bitmaps: TrackingBitmap[]): DiskTracking {
  const ours = bitmaps.filter((b) => b.point !== undefined);
  const usable = ours.filter((b) => !b.inconsistent);
  const t: DiskTracking = { disk, method, bitmaps };
  if (method === 'none') t.fullReason = 'ChangeTrackingUnavailable';
  else if (ours.some((b) => b.inconsistent)) t.fullReason = 'BitmapInconsistent';
  else if (!usable.length) t.fullReason = 'BitmapMissing';
  if (usable.length) t.since = usable.map((b) => b.point!).sort()[usable.length - 1];
  return t;
}

/** A restore request's checked format and normalised destination (HalError Invalid naming the field otherwise). */
export function restoreDest(req: { format?: unknown; dest?: unknown }): string {
  if (req?.format !== 'qcow2' && req?.format !== 'raw') throw new HalError('Invalid', `format: ${JSON.stringify(req?.format)} must be qcow2 or raw`);
  try {
    return normalisePath(req.dest as string);
  } catch (e: any) {
    throw new HalError('Invalid', `dest: ${e.message}`);
  }
}

/**
 * The bitmaps a new point makes obsolete: every kubevm bitmap of the disk except those counting from a
 * point of another chain that is still in use (`otherChains`: their target directories, e.g. another
 * policy backing up the same disk), so each chain's next backup can still be incremental.
 */
export function supersededBitmaps(
  bitmaps: readonly { name: string; point?: string }[],
  disk: string,
  otherChains: readonly string[] = [],
  keep: readonly string[] = [],
): string[] {
  const others = otherChains.map((t) => chainDirOf(t, disk));
  return bitmaps
    .filter((b) => b.point !== undefined && !keep.includes(b.name) && !others.some((dir) => fs.existsSync(path.join(dir, `${b.point}.json`))))
    .map((b) => b.name);
}
