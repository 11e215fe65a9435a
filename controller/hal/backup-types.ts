/**
 * Backup types of the HAL (see docs/hal.md, "Backup"). The node agent calls
 * Backend.backup / restore / verifyBackup / changeTracking / dropChangeTracking
 * with these; the qemu backend implements them in qemu/backup.ts, the sim
 * backend in sim/backup.ts. Plain data only: manifests are JSON files next to
 * the points and travel with the chain directory.
 */
import type { DiskSpec } from './types';

export type BackupType = 'Full' | 'Incremental';

/**
 * Why a backup is Full although an Incremental was asked for.
 *  - BitmapMissing: the disk carries no bitmap for the base point (change tracking
 *    new on this disk, the VM ended without a clean shutdown after the bitmap was
 *    made, the disk was restored or replaced, or another chain's full backup took over).
 *  - BitmapInconsistent: the bitmap was left in use by a QEMU that did not shut down
 *    cleanly (kill -9, host crash); QEMU marks it inconsistent on the next open.
 *  - BaseMissing: no complete, valid base point in the chain directory.
 *  - BaseMismatch: the base given is not the point the disk's bitmap counts from.
 *  - DiskResized: the disk's size differs from the base point's.
 *  - ChangeTrackingUnavailable: the disk cannot carry a bitmap (a raw disk started
 *    without `changeTracking`, so without its qcow2 metadata overlay).
 */
export type FullBackupReason =
  'BitmapMissing' | 'BitmapInconsistent' | 'BaseMissing' | 'BaseMismatch' | 'DiskResized' | 'ChangeTrackingUnavailable';

/** What to back up: a running (or paused) VM of this backend, or the disks of a stopped one. */
export type BackupSource = { uid: string } | { offline: OfflineSource };

export interface OfflineSource {
  /** The stopped VM's disks (as in its spec). Nothing may have them open. */
  disks: DiskSpec[];
  /** Recorded in the manifests; `uid` also serialises backups of the same VM. */
  vm?: { name?: string; uid?: string };
}

export interface BackupProgress {
  disk: string;
  /** Bytes copied so far and bytes to copy (dirty bytes for an incremental). */
  done: number;
  total: number;
}

export interface BackupRequest {
  /**
   * Chain directory of the VM. Each disk's points go to `<targetDir>/<disk>/`:
   * `<id>.qcow2` (the data; an incremental's backing file is the previous point,
   * by relative path, so the directory can be moved), `<id>.sums` (64 KiB chunk
   * digests) and `<id>.json` (the manifest, written last).
   */
  targetDir: string;
  type: BackupType;
  /** Disks to back up, by name (default: every writable disk). */
  disks?: string[];
  /**
   * Base point (manifest path) per disk for an Incremental. Default: the point
   * the disk's bitmap counts from, looked up in the disk's chain directory.
   */
  base?: Record<string, string>;
  /** Point id (file name stem, shared by all disks of the run); default: UTC time + random suffix. */
  pointId?: string;
  /**
   * Target directories of other chains of the same disks (another policy, on-demand backups): their
   * newest points' bitmaps are kept, so those chains stay incremental. Default: none (this backup's
   * new bitmap replaces every older kubevm bitmap of the disk).
   */
  otherChains?: string[];
  /** Copy rate limit, bytes per second (default unlimited). */
  bytesPerSecond?: number;
  /** Called about once a second per disk while data is copied. */
  onProgress?: (p: BackupProgress) => void;
  /** Aborting cancels the copy; backup() then rejects and leaves no point behind. */
  signal?: AbortSignal;
}

export interface DiskBackup {
  disk: string;
  type: BackupType;
  /** Set when type differs from the requested type: why this point is Full. */
  reason?: FullBackupReason;
  /** The point's manifest (what restore() and verifyBackup() take). */
  point: string;
  /** The point's qcow2 file. */
  file: string;
  /** Base point's manifest (Incremental only). */
  base?: string;
  /** Point ids from the chain's Full up to this point. */
  chain: string[];
  /** Bytes the point's files occupy on disk (qcow2 + sums + manifest). */
  size: number;
  /** Bytes QEMU copied (the dirty bytes of an incremental). */
  copiedBytes: number;
  virtualSize: number;
  /** `chunked-blake3:<hex>` (or `chunked-sha256:`): see PointManifest.checksum. */
  checksum: string;
  /** Copy time (the QMP job, until the point's data is on stable storage) and checksum time, milliseconds. */
  copyMs: number;
  checksumMs: number;
}

export interface BackupResult {
  pointId: string;
  /** live: through the VM's QEMU; offline: through qemu-storage-daemon (the VM is stopped). */
  mode: 'live' | 'offline';
  /** The point in time of the backup (all disks of a live VM share it). */
  startedAt: string;
  completedAt: string;
  durationMs: number;
  disks: DiskBackup[];
}

/** The manifest next to each point; a point without a complete manifest does not exist. */
export interface PointManifest {
  kind: 'kubevm.dev/backup-point';
  version: 1;
  id: string;
  disk: string;
  vm?: { name?: string; uid?: string };
  type: BackupType;
  reason?: FullBackupReason;
  /** Files of the point, relative to the manifest's directory. */
  file: string;
  sums: string;
  /** Base point (Incremental): its id and manifest path relative to this manifest's directory. */
  base?: { id: string; manifest: string };
  /** Point ids from the Full to this one. */
  chain: string[];
  virtualSize: number;
  /** Format of the source disk at backup time. */
  sourceFormat: 'qcow2' | 'raw';
  /**
   * `chunked-<algorithm>:<hex>`: the hash over the concatenated digests of each
   * `checksumChunkSize` (64 KiB) chunk of the point's logical content (the fully
   * resolved chain read as raw), with BLAKE3, or sha256 for a chain started with
   * KUBEVM_BACKUP_CHECKSUM=sha256 (every point of a chain uses its Full's). The `.sums` file of a Full holds all digests, an
   * Incremental's only those of the chunks it holds (u32 index + digest records),
   * so an incremental rehashes only what it copied.
   */
  checksum: string;
  checksumChunkSize: number;
  copiedBytes: number;
  mode: 'live' | 'offline';
  /** The point in time (job start) and the end of the backup, ISO 8601. */
  startedAt: string;
  completedAt: string;
  /** Written by the sim backend: the point's files are placeholders, not images. */
  sim?: boolean;
  /** Ids of older points folded into this one by retention merges. */
  mergedFrom?: string[];
}

export interface RestoreRequest {
  /** Point manifest path. */
  point: string;
  /** Path of the image to write. */
  dest: string;
  format: 'qcow2' | 'raw';
  /**
   * Replace an existing disk (a stopped VM's): written beside it and renamed
   * over it once verified. Without it, dest must not exist.
   */
  inPlace?: boolean;
}

export interface RestoreResult {
  dest: string;
  format: 'qcow2' | 'raw';
  virtualSize: number;
  /** The checksum of the written image; equal to the point's (else restore() throws). */
  checksum: string;
  durationMs: number;
}

/**
 * Folds the points between a kept point and an older point of its chain into
 * the kept point (retention with mergeIncrementals): its file is rebased onto
 * `onto` (qemu-img rebase, safe mode: the clusters of the folded points it does
 * not overwrite itself are copied into it), or made self-contained when `onto`
 * is absent, and its digests and manifest say so. Its content and checksum do
 * not change. The folded points are not deleted here: nothing depends on them
 * afterwards, and deleting their Backups removes their files.
 */
export interface MergeRequest {
  /** Manifest of the kept point (an incremental). */
  point: string;
  /** Manifest of its new base, an older point of its chain; absent: it becomes a Full. */
  onto?: string;
}

export interface MergeResult {
  point: string;
  type: BackupType;
  /** Manifest of the new base (absent for a Full). */
  base?: string;
  chain: string[];
  /** Ids of the points folded into it (this merge and earlier ones). */
  mergedFrom: string[];
  /** Bytes of the point's files after the merge. */
  size: number;
  checksum: string;
  durationMs: number;
}

export interface VerifyResult {
  ok: boolean;
  point: string;
  /** The manifest's checksum and the one recomputed from the chain's content. */
  expected?: string;
  actual?: string;
  chain: string[];
  /** What is wrong, one line each (empty when ok). */
  problems: string[];
}

export interface TrackingBitmap {
  name: string;
  /** Point id the bitmap counts changes since (kubevm's bitmaps are named `kubevm-<point id>`). */
  point?: string;
  /** Bytes marked changed (live only). */
  dirtyBytes?: number;
  inconsistent: boolean;
}

/** Changed-block tracking of one disk: what the next backup can be. */
export interface DiskTracking {
  disk: string;
  /** qcow2-bitmap: bitmaps in the disk; raw-overlay: in its metadata overlay; none: cannot track. */
  method: 'qcow2-bitmap' | 'raw-overlay' | 'none';
  bitmaps: TrackingBitmap[];
  /** The point a next Incremental would build on (if its manifest is still in the chain). */
  since?: string;
  /** Why the next backup will be Full, if it must be (regardless of chain contents). */
  fullReason?: FullBackupReason;
}
